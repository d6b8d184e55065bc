// X-Dyna for ComfyUI: small front-end helpers.
//
// 1. Generation size check. X-Dyna Load Reference, Render Pose and Face Cropper must all work at the
//    generation size (the reference latent, the pose hints and the S-Face hints are stacked frame by frame);
//    a node whose width × height differs from X-Dyna Load Reference's gets a warning badge, and a toast says
//    which. The check runs when a workflow is loaded and whenever one of those widgets changes.
// 2. Frame count. X-Dyna Temporal Sampler and X-Dyna Initial Latent take the frame count from `pose_images`
//    when it is connected; their `frames` widget is then greyed out and relabelled, since it is ignored.
// 3. Check Weights report. The node returns its report as UI text, which the front-end draws only on its own
//    text-preview nodes; here a read-only text box on the node shows it after each run.
// 4. Example workflows open readable. The template browser fits the whole graph into view (about 35% for
//    these graphs, where LiteGraph draws no text); a workflow that names a view in `extra.xdyna_view`
//    (the pack's examples) is shown there instead when it is opened as a template: the read-me and the
//    inputs at a zoom where text is drawn. Dropped or reopened workflows keep their own saved view.
import { app } from "../../../scripts/app.js";

const EXTENSION = "xdyna.helpers";
const SIZED_NODES = ["XDyna_LoadReference", "XDyna_RenderPose", "XDyna_FaceCropper"];
const FRAME_NODES = ["XDyna_TemporalSampler", "XDyna_InitLatent"];
const SIZE_BADGE_KEY = "xdynaSizeBadge";
const REPORT_NODE = "XDyna_CheckWeights";
const REPORT_WIDGET = "weights_report";
const VIEW_KEY = "xdyna_view";

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function inputLinked(node, name) {
  const input = node.inputs?.find((i) => i.name === name);
  return input != null && input.link != null;
}

// The node's width × height as widget values, or null when either comes through a link or is missing.
function generationSize(node) {
  if (inputLinked(node, "width") || inputLinked(node, "height")) return null;
  const width = widget(node, "width")?.value;
  const height = widget(node, "height")?.value;
  return Number.isFinite(width) && Number.isFinite(height) ? `${width}×${height}` : null;
}

function setSizeBadge(node, text) {
  node.badges = (node.badges ?? []).filter((badge) => !badge?.[SIZE_BADGE_KEY]);
  if (text) {
    const badge = new window.LGraphBadge({ text, fgColor: "#1d1d1d", bgColor: "#f2c94c" });
    badge[SIZE_BADGE_KEY] = true;
    node.badges.push(badge);
  }
  node.setDirtyCanvas?.(true, true);
}

let lastWarning = "";

// Returns the nodes whose size differs from the reference's (or from the most common size without one).
export function checkGenerationSizes(graph = app.graph, { toast = true } = {}) {
  const nodes = (graph?._nodes ?? []).filter((n) => SIZED_NODES.includes(n.comfyClass ?? n.type) && n.mode === 0);
  const sized = nodes.map((node) => [node, generationSize(node)]).filter(([, size]) => size);
  const counts = new Map();
  for (const [, size] of sized) counts.set(size, (counts.get(size) ?? 0) + 1);
  const reference = sized.find(([node]) => (node.comfyClass ?? node.type) === "XDyna_LoadReference");
  const expected = reference?.[1] ?? [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  const odd = [];
  for (const node of nodes) {
    const size = generationSize(node);
    const mismatch = size && expected && size !== expected;
    setSizeBadge(node, mismatch ? `⚠ ${size}, not ${expected}` : null);
    if (mismatch) odd.push(node);
  }
  const warning = odd.length
    ? `${odd.map((n) => `${n.title} (#${n.id})`).join(", ")} ${odd.length === 1 ? "works" : "work"} at a different ` +
      `width × height than ${reference ? "X-Dyna Load Reference" : "the other X-Dyna nodes"} (${expected}). ` +
      "Pose and face hints must have the generation size: set the same width and height on every X-Dyna node."
    : "";
  if (toast && warning && warning !== lastWarning) {
    app.extensionManager?.toast?.add({ severity: "warn", summary: "X-Dyna: generation sizes differ", detail: warning, life: 8000 });
  }
  lastWarning = warning;
  return odd;
}

let pending = null;
function scheduleSizeCheck() {
  clearTimeout(pending);
  pending = setTimeout(() => checkGenerationSizes(), 50);
}

function updateFramesWidget(node) {
  const frames = widget(node, "frames");
  if (!frames) return;
  const fromPoses = inputLinked(node, "pose_images");
  frames.disabled = fromPoses;
  frames.label = fromPoses ? "frames (from pose_images)" : undefined;
  node.setDirtyCanvas?.(true, true);
}

function addReportWidget(node) {
  const box = document.createElement("textarea");
  box.readOnly = true;
  box.spellcheck = false;
  box.placeholder = "Queue this node: the report of which weights are present appears here.";
  box.className = "xdyna-weights-report";
  Object.assign(box.style, { fontFamily: "monospace", fontSize: "11px", whiteSpace: "pre", resize: "none" });
  const report = node.addDOMWidget(REPORT_WIDGET, "xdyna_report", box, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => box.value,
    setValue: (value) => {
      box.value = typeof value === "string" ? value : "";
    },
    getMinHeight: () => 140,
  });
  report.serialize = false;
  node.setSize([Math.max(node.size[0], 560), Math.max(node.size[1], 260)]);
}

function showReport(node, output) {
  const report = widget(node, REPORT_WIDGET);
  const text = output?.text;
  if (!report || text == null) return;
  report.value = Array.isArray(text) ? text.join("\n") : String(text);
  node.setDirtyCanvas?.(true, true);
}

// The view an example workflow asks for: `scale`, and the canvas point to put at the top left of the canvas.
function applyWorkflowView(graphData) {
  const view = graphData?.extra?.[VIEW_KEY];
  const ds = app.canvas?.ds;
  if (!view || !ds || !Number.isFinite(view.scale) || !Array.isArray(view.top_left)) return;
  ds.scale = view.scale;
  ds.offset = [-view.top_left[0], -view.top_left[1]];
  app.canvas.setDirty(true, true);
}

app.registerExtension({
  name: EXTENSION,

  setup() {
    // The template browser calls app.loadGraphData(graph, clean, restore, name, {openSource: "template"}) and
    // then fits the graph into view; the example's own view is applied after that.
    const loadGraphData = app.loadGraphData;
    app.loadGraphData = async function (graphData, clean, restoreView, name, options, ...rest) {
      const result = await loadGraphData.call(this, graphData, clean, restoreView, name, options, ...rest);
      if (options?.openSource === "template" && graphData?.extra?.[VIEW_KEY]) {
        applyWorkflowView(graphData);
        requestAnimationFrame(() => applyWorkflowView(graphData)); // after a fit the front-end defers
      }
      return result;
    };
  },

  onNodeOutputsUpdated(outputs) {
    for (const [id, output] of Object.entries(outputs ?? {})) {
      const node = app.graph?.getNodeById?.(id);
      if ((node?.comfyClass ?? node?.type) === REPORT_NODE) showReport(node, output);
    }
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === REPORT_NODE) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function (...args) {
        const result = onNodeCreated?.apply(this, args);
        addReportWidget(this);
        return result;
      };
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        const result = onExecuted?.apply(this, [output]);
        showReport(this, output);
        return result;
      };
    }
    if (FRAME_NODES.includes(nodeData.name)) {
      const onConnectionsChange = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function (...args) {
        const result = onConnectionsChange?.apply(this, args);
        updateFramesWidget(this);
        return result;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function (...args) {
        const result = onConfigure?.apply(this, args);
        updateFramesWidget(this);
        return result;
      };
    }
    if (SIZED_NODES.includes(nodeData.name)) {
      const onConnectionsChange = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function (...args) {
        const result = onConnectionsChange?.apply(this, args);
        scheduleSizeCheck();
        return result;
      };
    }
  },

  nodeCreated(node) {
    if (!SIZED_NODES.includes(node.comfyClass)) return;
    for (const name of ["width", "height"]) {
      const w = widget(node, name);
      if (!w) continue;
      const callback = w.callback;
      w.callback = function (...args) {
        const result = callback?.apply(this, args);
        scheduleSizeCheck();
        return result;
      };
    }
    scheduleSizeCheck();
  },

  afterConfigureGraph() {
    lastWarning = "";
    checkGenerationSizes();
  },
});
