"""Loading ``MODULE:APP`` the way gunicorn does (``gunicorn.util.import_app``)."""

import ast
import importlib
import os
import sys
import traceback


class AppLoadError(ValueError):
    """The app could not be loaded; the message says why (the traceback was printed)."""


def _parse_target(spec):
    """``name`` or ``factory(literal args)`` -> (name, args, kwargs, is_call)."""
    try:
        expr = ast.parse(spec, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"Failed to parse {spec!r} as an attribute name or function call.")
    if isinstance(expr, ast.Name):
        return expr.id, (), {}, False
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        try:
            args = tuple(ast.literal_eval(a) for a in expr.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in expr.keywords}
        except ValueError:
            raise AppLoadError(f"Failed to parse arguments as literal values in {spec!r}.")
        return expr.func.id, args, kwargs, True
    raise AppLoadError(f"Failed to parse {spec!r} as an attribute name or function call.")


def import_app(spec):
    """The WSGI callable named by ``MODULE[:APP]`` (APP defaults to ``application``; it may be a
    call of a factory with literal arguments, ``create_app('prod')``). An error is printed with its
    traceback to stderr and raised as :class:`AppLoadError`."""
    module, _, target = spec.partition(":")
    target = target or "application"
    try:
        mod = importlib.import_module(module)
    except (Exception, SystemExit) as e:  # any error while importing is the app's
        hint = ""
        if isinstance(e, ModuleNotFoundError) and module.endswith(".py"):
            hint = f" (did you mean '{module[:-3].replace(os.sep, '.')}:{target}'?)"
        sys.stderr.write(
            f"Failed to import module {module!r}{hint} for the app {spec!r}:\n"
            + "".join(traceback.format_exception(type(e), e, e.__traceback__))
        )
        sys.stderr.flush()
        raise AppLoadError(f"failed to import module {module!r}: {type(e).__name__}: {e}") from None
    name, args, kwargs, is_call = _parse_target(target)
    try:
        app = getattr(mod, name)
    except AttributeError:
        raise AppLoadError(f"Failed to find attribute {name!r} in {module!r}.") from None
    if is_call:
        try:
            app = app(*args, **kwargs)
        except Exception as e:
            sys.stderr.write(
                f"The app factory {target!r} in {module!r} failed:\n"
                + "".join(traceback.format_exception(type(e), e, e.__traceback__))
            )
            raise AppLoadError(f"the app factory {target!r} raised {type(e).__name__}: {e}") from None
    if app is None:
        raise AppLoadError(f"Failed to find application object: {target!r} is None.")
    if not callable(app):
        raise AppLoadError(f"Application object {target!r} in {module!r} must be callable.")
    return app
