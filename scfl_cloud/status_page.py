"""Server-rendered status page at ``/`` (Jinja2; no JavaScript needed)."""

from __future__ import annotations

import datetime
import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=jinja2.select_autoescape(["html"]))
    env.filters["ts"] = lambda t: "—" if t is None else datetime.datetime.fromtimestamp(
        t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    env.filters["ms"] = lambda v: "—" if v is None else f"{v:.2f} ms"
    env.filters["mb"] = lambda n: f"{n / 1e6:.2f} MB"
    return env


def render_status(status: dict, skills: list) -> str:
    import time

    return _env().get_template("status.html").render(status=status, skills=skills, now=time.time())
