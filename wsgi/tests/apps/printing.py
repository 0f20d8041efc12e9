import os

print(f"imported in pid {os.getpid()}")


def app(environ, start_response):
    print(f"served {environ['PATH_INFO']} in pid {os.getpid()}")
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
