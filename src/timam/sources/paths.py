"""The one check on paths a dataset's annotations join to a folder: they may not climb out of it.

An annotation file is input from elsewhere: a row ``../../../../tmp/outside/secret.jpg`` would
otherwise make training read any image the user can read, silently. The rule, for every reader
(generic table, cuhk_pedes, karpathy, ucm_karpathy, text_c10):

* a relative path is joined to the folder it is declared relative to and must stay inside it once
  its ``..`` parts are resolved (lexically: a symbolic link inside the folder is the user's own
  choice and is followed);
* an absolute path is kept as it is where the format documents absolute paths (the generic table);
  ``absolute_allowed=False`` refuses it where a plain name is expected (text_c10 class names).
"""

from __future__ import annotations

import os
from pathlib import Path

from timam.sources.caption_table import BadInputError


def path_under_root(
    root: str | Path, relative: str | Path, *, where: str, setting: str, absolute_allowed: bool = True
) -> Path:
    """``root / relative``, refusing a path that leaves ``root``; ``where`` names the row, ``setting``
    the parameter that sets ``root`` (both go into the message)."""
    root, path = Path(root), Path(relative)
    if path.is_absolute():
        if absolute_allowed:
            return path
        raise BadInputError(
            f"{where}: {str(relative)!r} is an absolute path where a name inside {root} is expected "
            f"(rule: names in this file are relative to {setting}). Write the name as it is under {root}."
        )
    joined = root / path
    if ".." in path.parts:
        inside = os.path.abspath(root)
        if os.path.commonpath([inside, os.path.abspath(joined)]) != inside:
            absolute = ", or write an absolute path if you mean that file" if absolute_allowed else ""
            raise BadInputError(
                f"{where}: path {str(relative)!r} leaves {root} (rule: a relative path may not climb out of "
                f"the folder it is relative to with '..'). Fix the path, or set {setting} to a folder that "
                f"holds every file the annotations name{absolute}."
            )
    return joined
