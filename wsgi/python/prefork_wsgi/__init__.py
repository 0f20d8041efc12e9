"""prefork-wsgi: a WSGI server on prefork-pool, with gunicorn's command line.

    prefork-wsgi -b 127.0.0.1:5000 --threads 4 app:site

A view that calls its own server over HTTP (``requests.post('http://localhost:5000/...')``)
does not hang: the inner request is detected as a call of this process to itself and served on a
spare thread, while the outer view waits in its socket read without the GIL.
"""

from .wrappers import FileWrapper

__all__ = ["FileWrapper", "main"]
__version__ = "0.1.0"


def main(argv=None):
    from .cli import main as _main

    return _main(argv)
