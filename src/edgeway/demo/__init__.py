"""The demo: what `edgeway demo` starts on a laptop."""
