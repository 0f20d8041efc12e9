"""A minimal single-file Django project (settings in code): a normal view, a
`StreamingHttpResponse` and a `FileResponse` (which Django hands to `wsgi.file_wrapper`).

The file served is `$FRAMEWORK_FILE`; `/stream` waits after its first chunk until
`$FRAMEWORK_GATE` exists (see flask_files.py)."""

import os
import time

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="prefork-wsgi tests only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    USE_TZ=True,
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import FileResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from framework_data import FIRST, chunk  # noqa: E402


def hello(request):
    return JsonResponse({"hello": "django", "method": request.method,
                         "q": request.GET.get("q"), "host": request.get_host()})


def stream(request):
    n = int(request.GET.get("n", "20"))

    def generate():
        yield FIRST
        gate = os.environ["FRAMEWORK_GATE"]
        deadline = time.monotonic() + 15
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                yield b"GATE NEVER OPENED: the first chunk was not sent on its own"
                return
            time.sleep(0.01)
        for i in range(n):
            yield chunk(i)

    return StreamingHttpResponse(generate(), content_type="application/octet-stream")


def file(request):
    return FileResponse(open(os.environ["FRAMEWORK_FILE"], "rb"),
                        content_type="application/octet-stream")


def download(request):
    return FileResponse(open(os.environ["FRAMEWORK_FILE"], "rb"), as_attachment=True,
                        filename="data.bin")


def echo(request):
    body = request.body
    return JsonResponse({"size": len(body), "tail": body[-8:].hex()})


urlpatterns = [
    path("hello", hello),
    path("stream", stream),
    path("file", file),
    path("download", download),
    path("echo", echo),
]

application = get_wsgi_application()
