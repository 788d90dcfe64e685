"""Where a command may write: never over the user's inputs, never over earlier results.

Every command that writes files into a folder the user names asks here first, before any work:

    refuse_inside_inputs(preview, {"the data": cfg.source}, "--preview")
    refuse_earlier_results(out, ["0000-seed0.png", "grid.png"], "--out")
    fresh_folder(default)   # samples/, else samples-2/, samples-3/, ...
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ldm.core.errors import LdmError

SHOWN = 3  # file names quoted in a refusal


def refuse_inside_inputs(output: str | Path, inputs: dict[str, str | Path | None], option: str) -> None:
    """`output` must not be, or lie inside, any of the `inputs` folders (or a file's folder):
    files written there would mix with the user's own, or replace them where names meet."""
    target = Path(output).expanduser().resolve()
    for what, source in inputs.items():
        if source is None or not Path(str(source)).expanduser().exists():
            continue  # a hub name or a glob: nothing local to write over
        folder = Path(str(source)).expanduser().resolve()
        folder = folder if folder.is_dir() else folder.parent
        if target == folder or folder in target.parents:
            raise LdmError(f"{option} {output} is inside {what} ({folder}): writing there would mix with or "
                           f"replace its files; choose a folder outside it")


def refuse_earlier_results(output: str | Path, names: Iterable[str], option: str) -> None:
    """`output` must not hold any of the files about to be written (earlier results)."""
    folder = Path(output)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise LdmError(f"{option} {output} is a file, not a folder")
    clashes = sorted({name for name in names if (folder / name).exists()})
    if clashes:
        quoted = ", ".join(clashes[:SHOWN]) + (f" and {len(clashes) - SHOWN} more" if len(clashes) > SHOWN else "")
        raise LdmError(f"{option} {output} already holds results this run would replace ({quoted}): "
                       "choose another folder, or move them away first")


def fresh_folder(folder: str | Path) -> Path:
    """`folder` if it does not exist or is empty, else the first of folder-2, folder-3, ... that is:
    a default output folder that never replaces an earlier run's files."""
    folder = Path(folder)
    candidate, number = folder, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        number += 1
        candidate = folder.with_name(f"{folder.name}-{number}")
    return candidate
