"""Independent re-statements of what the official X-Dyna code computes, used as test oracles."""
