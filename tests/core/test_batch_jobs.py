"""Batch jobs: pairs matched by stem in a folder, CSV/JSON job lists, seeds."""

from __future__ import annotations

import json
import logging

import pytest

from xdyna_tools.jobs import BatchInputError, derived_seed, job_seed, load_jobs, pair_folder, read_job_list


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_pairs_are_matched_by_stem_in_the_folder_and_its_subfolders(tmp_path, caplog):
    touch(tmp_path / "alice.png"), touch(tmp_path / "alice.mp4")
    touch(tmp_path / "reference" / "bob.JPG"), touch(tmp_path / "driving" / "bob.webm")
    touch(tmp_path / "lonely.png"), touch(tmp_path / "readme.txt"), touch(tmp_path / ".hidden.mp4")
    with caplog.at_level(logging.WARNING, logger="xdyna.batch"):
        jobs = pair_folder(tmp_path)
    assert [(j.name, j.reference.name, j.driving.name) for j in jobs] == [
        ("alice", "alice.png", "alice.mp4"),
        ("bob", "bob.JPG", "bob.webm"),
    ]
    assert "lonely.png has no video" in caplog.text
    assert all(j.seed is None and j.overrides == {} for j in jobs)


def test_two_images_for_one_stem_are_an_error(tmp_path):
    touch(tmp_path / "a.png"), touch(tmp_path / "a.jpg"), touch(tmp_path / "a.mp4")
    with pytest.raises(BatchInputError, match="stem 'a' has 2 files"):
        pair_folder(tmp_path)


def test_a_folder_without_pairs_is_an_error(tmp_path):
    touch(tmp_path / "a.png")
    with pytest.raises(BatchInputError, match="no image/video pairs"):
        load_jobs(tmp_path)
    with pytest.raises(BatchInputError, match="neither a folder"):
        load_jobs(tmp_path / "missing")


def test_csv_list_with_seeds_and_override_columns(tmp_path):
    touch(tmp_path / "in" / "ref.png"), touch(tmp_path / "in" / "dance.mp4")
    (tmp_path / "jobs.csv").write_text(
        "name,reference,driving,seed,XDyna_TemporalSampler.steps,sampler.cfg,XDyna_LoadReference.crop\n"
        "first,in/ref.png,in/dance.mp4,7,10,6.5,center\n"
        ",in/ref.png,in/dance.mp4,,,,\n"
        "first,in/ref.png,in/dance.mp4,,,,\n"
    )
    jobs = read_job_list(tmp_path / "jobs.csv")
    assert [j.name for j in jobs] == ["first", "ref__dance", "first-2"]
    assert jobs[0].reference == tmp_path / "in" / "ref.png" and jobs[0].seed == 7
    assert jobs[0].overrides == {
        "XDyna_TemporalSampler.steps": 10,
        "sampler.cfg": 6.5,
        "XDyna_LoadReference.crop": "center",
    }
    assert jobs[1].seed is None and jobs[1].overrides == {}


def test_json_list_with_an_overrides_object(tmp_path):
    touch(tmp_path / "a.png"), touch(tmp_path / "a.mp4")
    entries = [
        {
            "reference": "a.png",
            "driving": str(tmp_path / "a.mp4"),
            "seed": 3,
            "overrides": {"12.steps": 5},
            "sampler.cfg": 4,
        },
    ]
    (tmp_path / "jobs.json").write_text(json.dumps({"jobs": entries}))
    (job,) = load_jobs(tmp_path / "jobs.json")
    assert job.name == "a" and job.seed == 3 and job.overrides == {"12.steps": 5, "sampler.cfg": 4}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"reference": "a.png"}, "no driving"),
        ({"reference": "a.png", "driving": "nope.mp4"}, "the driving file .* does not exist"),
        ({"reference": "a.png", "driving": "a.mp4", "seed": "x"}, "seed 'x' is not an integer"),
        ({"reference": "a.png", "driving": "a.mp4", "seed": -1}, "seed -1 is outside"),
        ({"reference": "a.png", "driving": "a.mp4", "overrides": [1]}, "overrides must be an object"),
    ],
)
def test_list_entries_are_checked_with_the_entry_named(tmp_path, entry, message):
    touch(tmp_path / "a.png"), touch(tmp_path / "a.mp4")
    (tmp_path / "jobs.json").write_text(json.dumps([entry]))
    with pytest.raises(BatchInputError, match=f"jobs.json entry 1: {message}"):
        read_job_list(tmp_path / "jobs.json")


def test_seeds_come_from_the_job_then_the_batch_then_the_name(tmp_path):
    touch(tmp_path / "a.png"), touch(tmp_path / "a.mp4"), touch(tmp_path / "b.png"), touch(tmp_path / "b.mp4")
    a, b = pair_folder(tmp_path)
    assert job_seed(a, None) == derived_seed("a") != derived_seed("b") == job_seed(b, None)
    assert derived_seed("a") == derived_seed("a")  # stable across runs: a resumed batch reproduces its videos
    assert job_seed(a, 5) == 5
    a.seed = 9
    assert job_seed(a, 5) == 9


def test_job_names_are_safe_folder_names(tmp_path):
    touch(tmp_path / "my clip (1).png"), touch(tmp_path / "my clip (1).mp4")
    (job,) = pair_folder(tmp_path)
    assert job.name == "my_clip_1"
