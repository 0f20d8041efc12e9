"""``wsgi.file_wrapper``."""


class FileWrapper:
    """PEP 3333's ``wsgi.file_wrapper``: iterates a file-like object in blocks. The server sends a
    real file (one with ``fileno()``) from its descriptor instead, with its length."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration
