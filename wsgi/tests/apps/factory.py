def create_app(greeting="hello"):
    def app(environ, start_response):
        body = f"{greeting} from a factory\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


application = create_app("default")
