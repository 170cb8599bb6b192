"""`reader-study serve`: the rater's web app (Flask, server-rendered, a few lines of JS for zoom).

Routes (everything else is 404; nothing under the study folder is ever served by path):
- `GET  /r/<rater>`                 instructions and progress (pause/resume lands here);
- `GET  /r/<rater>/rate`            the rater's first unanswered image, or the thank-you page;
- `POST /r/<rater>/answer`          item token + call (real|synthetic) + optional score 1-5 + CSRF;
- `GET  /r/<rater>/img/<item>`      the image bytes of one of this rater's items.

Why it is blind: pages and URLs carry only random tokens (the rater's, and a fresh item token per
(rater, image)); every image goes through the one `image` view with identical headers and, since
`create` stores uncompressed PNGs of one size, an identical `Content-Length`; no view reads the
ground truth. Tampering is refused with 4xx: unknown or malformed tokens and other raters' items
are 404, a missing or wrong CSRF token is 403, a bad call or score is 400, answering anything but
the current item (a replayed or stale form, a second answer) is 409. Answers are final once saved.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import secrets
import sqlite3
import sys
import threading
from pathlib import Path

from flask import Flask, Response, abort, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from jaxsynth.reader_study import store

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
FILE_RE = re.compile(r"[0-9a-f]{32}\.png")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the rater token is in the URL
    "Cache-Control": "no-store",
}


def create_app(study_dir: str | os.PathLike) -> Flask:
    """The WSGI app for one study folder (the folder must hold a study made by `create`)."""
    study = Path(study_dir).resolve()
    conn = store.connect(study)  # fails early, as a UserError, if this is not a study
    secret = store.get_meta(conn, "session_secret")
    conn.close()

    app = Flask(__name__, static_url_path="/static")
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=16 * 1024,
        STUDY_DIR=study,
    )
    images_dir = study / store.IMAGES_DIR

    def db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = store.connect(study)
        return g.db

    @app.teardown_appcontext
    def _close_db(_exc) -> None:
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    def rater_or_404(token: str) -> store.Rater:
        rater = store.rater_by_token(db(), token) if TOKEN_RE.fullmatch(token) else None
        if rater is None:
            abort(404)
        return rater

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    @app.get("/r/<token>")
    def intro(token: str):
        rater = rater_or_404(token)
        answered, total = store.progress(db(), rater.rater_id)
        return render_template("intro.html", rater=rater, answered=answered, total=total)

    @app.get("/r/<token>/rate")
    def rate(token: str):
        rater = rater_or_404(token)
        answered, total = store.progress(db(), rater.rater_id)
        item = store.next_unanswered(db(), rater.rater_id)
        if item is None:
            return render_template("done.html", rater=rater, total=total)
        store.mark_shown(db(), rater.rater_id, item.position)
        return render_template(
            "rate.html",
            rater=rater,
            item=item,
            answered=answered,
            total=total,
            csrf=csrf_token(),
            scores=store.SCORES,
        )

    @app.post("/r/<token>/answer")
    def answer(token: str):
        rater = rater_or_404(token)
        form_csrf = request.form.get("csrf", "")
        if "csrf" not in session or not hmac.compare_digest(
            form_csrf.encode(), session["csrf"].encode()
        ):
            abort(403, "This form has expired or did not come from this page; reload it.")
        item_token = request.form.get("item", "")
        item = store.item_of_rater(db(), rater.rater_id, item_token)
        if not TOKEN_RE.fullmatch(item_token) or item is None:
            abort(404)
        call = request.form.get("call", "")
        if call not in store.CALLS:
            abort(400, "Choose real or synthetic.")
        raw_score = request.form.get("score", "")
        if raw_score == "":
            score = None
        elif raw_score in {str(s) for s in store.SCORES}:
            score = int(raw_score)
        else:
            abort(400, "The realism score must be 1 to 5, or left empty.")
        conn = db()
        with store.transaction(conn):
            current = store.next_unanswered(conn, rater.rater_id)
            if current is None or current.position != item.position:
                abort(409)
            conn.execute(
                "INSERT INTO answers (rater_id, position, call, score, answered_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (rater.rater_id, item.position, call, score, store.now_utc()),
            )
        return redirect(url_for("rate", token=token), code=303)

    @app.get("/r/<token>/img/<item_token>")
    def image(token: str, item_token: str):
        rater = rater_or_404(token)
        file_name = (
            store.image_file_of_item(db(), rater.rater_id, item_token)
            if TOKEN_RE.fullmatch(item_token)
            else None
        )
        if file_name is None or not FILE_RE.fullmatch(file_name):
            abort(404)
        path = images_dir / file_name
        if path.parent != images_dir:  # belt and braces: names come from our DB only
            abort(404)
        return Response(path.read_bytes(), mimetype="image/png")

    @app.errorhandler(HTTPException)
    def _error(e: HTTPException):
        token = (request.view_args or {}).get("token", "")
        known = bool(TOKEN_RE.fullmatch(token)) and store.rater_by_token(db(), token) is not None
        continue_url = url_for("rate", token=token) if known else None
        description = e.description if e.code in (400, 403) else None
        page = render_template(
            "error.html",
            code=e.code,
            name=e.name,
            description=description,
            continue_url=continue_url,
        )
        return page, e.code

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(study_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with werkzeug's threaded server until Ctrl-C (a local, small-audience study)."""
    from werkzeug.serving import make_server

    app = create_app(study_dir)
    conn = store.connect(study_dir)
    links = [(r.name, r.token, *store.progress(conn, r.rater_id)) for r in store.raters(conn)]
    conn.close()
    if not is_loopback(host):
        print(
            f"warning: listening on {host}: rater links travel in clear text over plain HTTP; "
            "put a TLS reverse proxy in front for anything beyond a trusted network",
            file=sys.stderr,
        )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # request lines would log tokens
    server = make_server(host, port, app, threaded=True)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"reader study {Path(study_dir)} on http://{shown_host}:{server.server_port}/")
    for name, token, done, total in links:
        print(
            f"  {name} ({done}/{total} answered): http://{shown_host}:{server.server_port}/r/{token}"
        )
    print("Ctrl-C to stop; every answer is already saved.", flush=True)
    # A parent that ignores SIGINT (nohup, some job runners, pytest-xdist workers) passes the
    # ignore on to us, and Python then never raises KeyboardInterrupt: Ctrl-C / `kill -INT`
    # would be silently dropped. Stop on SIGINT and SIGTERM regardless.
    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
