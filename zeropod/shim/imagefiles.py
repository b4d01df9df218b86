"""What a checkpoint image held when it was written, to tell an intact image from a damaged one.

After a dump the shim records each image file's size (logs aside: a restore appends its own).
A restore that failed while its image still matches that record failed for another reason
(CRIU killed, hung at a step, the node short of something for a moment), so the same image
is worth one more try before the app is started cold and its memory lost; a file missing,
added or of another size means the image itself is damaged, and a second try would only
fail again (or, for truncated pages, loop until its bound).
"""

from __future__ import annotations

import os

LOG_SUFFIX = ".log"


def sizes(image_dir: str) -> dict[str, int]:
    """Each image file's size by name (logs excluded); {} if the dir cannot be read."""
    found: dict[str, int] = {}
    try:
        with os.scandir(image_dir) as entries:
            for entry in entries:
                if entry.name.endswith(LOG_SUFFIX) or not entry.is_file(follow_symlinks=False):
                    continue
                found[entry.name] = entry.stat(follow_symlinks=False).st_size
    except OSError:
        return {}
    return found


def intact(image_dir: str, recorded: dict[str, int]) -> bool:
    """True if every recorded file is still there with its recorded size."""
    if not recorded:
        return False
    now = sizes(image_dir)
    return all(now.get(name) == size for name, size in recorded.items())
