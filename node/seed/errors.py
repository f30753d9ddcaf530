"""Why an archive of the images directory is refused. These never reach a client: a refused
archive is logged and skipped, and the node goes on serving everything else.

    NodeError                      (node.errors)
    └── ArchiveInvalid             truncated, corrupt, unsafe or incomplete archive
        ├── ArchiveUnsupported     well-formed, but a kind of content this node cannot seed
        └── ArchiveTooLarge        more than the store's quota or its free disk can take, or
                                   a compressed archive expanding like a decompression bomb
"""

from __future__ import annotations

from node.errors import NodeError


class ArchiveInvalid(NodeError):
    pass


class ArchiveUnsupported(ArchiveInvalid):
    pass


class ArchiveTooLarge(ArchiveInvalid):
    def __init__(self, message: str, detail: object = None, fix: str = "", room: int = 0) -> None:
        super().__init__(message, detail)
        self.fix = fix  # what makes it fit
        # The bytes the store had no room for (it may have, later); 0: too large whatever the
        # room, as a decompression bomb is.
        self.room = room
