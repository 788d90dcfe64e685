"""Where `ldm evaluate` writes, checked before any model loads: no output inside a folder it reads
(the data, a model), none over an earlier file (an --out or --grid that exists, a --samples folder
with images in it), --grid and --out not one file; and a file that cannot be written said in one
line."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from ldm.core.errors import LdmError
from ldm.core.outputs import refuse_earlier_results, refuse_inside_inputs


def check_outputs(s) -> None:
    """Raise LdmError when an output of `s` (an `ldm.apps.evaluate.settings` model) would land in
    an input folder or replace an earlier file."""
    read = {"the data": getattr(s, "data", None), "the autoencoder": getattr(s, "vae", None),
            "the pipeline": getattr(s, "pipeline", None), "the CLIP": getattr(s, "clip", None)}
    grid = getattr(s, "grid", None)
    for option, path in (("--out", s.out), ("--grid", grid)):
        if path is not None:
            refuse_inside_inputs(path, read, option)
            check_new_file(path, option)
    if s.out is not None and grid is not None and Path(s.out).absolute() == Path(grid).absolute():
        raise LdmError(f"--grid and --out name the same file ({s.out}): give each its own")
    samples = getattr(s, "samples", None)
    if samples is not None:
        refuse_inside_inputs(samples, read, "--samples")
        refuse_earlier_results(samples, [p.name for p in Path(samples).glob("*.png")], "--samples")


def check_new_file(path: str, option: str) -> None:
    """A file this run will write: not there yet (an earlier result, or a folder), under folders."""
    target, shown = Path(path), path or "''"
    if target.exists() or target.is_symlink():
        what = "a folder" if target.is_dir() else "a file this run would replace"
        raise LdmError(f"{option} {shown} already exists ({what}): choose a new file name")
    above = next(parent for parent in target.absolute().parents if parent.exists())
    if not above.is_dir():
        raise LdmError(f"{option} {shown}: {above} is a file, not a folder")


@contextmanager
def writing(option: str, path: str | Path):
    """Writing the file `path` that `option` named: a place it cannot be written (read-only, a
    full disk) is one line."""
    try:
        yield
    except OSError as err:
        raise LdmError(f"cannot write {option} {path}: {err.strerror or err}") from None
