"""A stand-in for the Hugging Face hub on 127.0.0.1, for w2sg's download tests.

Serves model repositories made from family directories (one sub-directory per revision, each a
checkpoint): every sub-directory is a branch, `main` points at the last one in training order. The
endpoints and headers are the ones huggingface_hub and `w2sg lm download` use:

  GET  /api/models/ORG/NAME/refs                  branches with targetCommit
  GET  /api/models/ORG/NAME/revision/REV          {"sha", "siblings"}
  GET  /api/models/ORG/NAME/tree/REV[?...]        [{type, path, size, oid, lfs?}], paginated
                                                   (Link: <...>; rel="next") by --page-size entries
  HEAD/GET /ORG/NAME/resolve/REV/PATH              X-Repo-Commit, ETag (git blob id), Content-Length;
                                                   for LFS files (*.safetensors, *.bin) a 302 to
                                                   http://localhost:PORT/lfs/SHA256 -- another host
                                                   name, as the real hub's CDN -- with X-Linked-Etag
                                                   and X-Linked-Size
  GET  /lfs/SHA256                                  the bytes, with Range support (206)

Options: --repo ORG/NAME=DIR (repeatable), --port-file FILE (the chosen port is written there),
--log FILE (one JSON line per request: method, path, range, auth), --token T (API and resolve
requests need `Authorization: Bearer T`), --slow BYTES (after that many bytes of an LFS body, sleep
0.2 s per 4 KiB: lets a test kill a download half-way), --fail-branch NAME (repeatable: the LFS
files of that branch's commit answer 500, a server error in the middle of a sweep).
"""

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse, parse_qs

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")


def step_key(name):
    m = re.search(r"step(\d+)", name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


class Repo:
    def __init__(self, repo_id, root):
        self.id = repo_id
        self.branches = {}  # name -> commit
        self.commits = {}  # commit -> {path: file}
        self.blobs = {}  # sha256 -> absolute path
        names = sorted(
            (d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json"))),
            key=step_key,
        )
        for name in names:
            files = {}
            base = os.path.join(root, name)
            for dirpath, _, filenames in os.walk(base):
                for fn in sorted(filenames):
                    full = os.path.join(dirpath, fn)
                    rel = os.path.relpath(full, base).replace(os.sep, "/")
                    data = open(full, "rb").read()
                    git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                    sha = hashlib.sha256(data).hexdigest()
                    lfs = rel.endswith(LFS_SUFFIXES)
                    files[rel] = {"path": full, "size": len(data), "git": git, "sha256": sha, "lfs": lfs}
                    self.blobs[sha] = full
            h = hashlib.sha1(repo_id.encode() + b"\0" + name.encode())
            for rel in sorted(files):
                h.update(rel.encode() + files[rel]["git"].encode())
            commit = h.hexdigest()
            self.branches[name] = commit
            self.commits[commit] = files
        if names:
            self.branches["main"] = self.branches[names[-1]]

    def commit(self, rev):
        if rev in self.commits:
            return rev
        return self.branches.get(rev)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def handle(self):
        # A client killed mid-download (the resume test) is not an error of the server.
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass

    def record(self):
        if self.server.log:
            with self.server.lock, open(self.server.log, "a") as f:
                f.write(json.dumps({
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("Host"),
                    "range": self.headers.get("Range"),
                    "auth": self.headers.get("Authorization") is not None,
                }) + "\n")

    def send(self, status, body=b"", headers=None, content_type="application/json"):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code, message):
        body = json.dumps({"error": message}).encode()
        self.send(status, body, {"X-Error-Code": code, "X-Error-Message": message})

    def authorized(self):
        token = self.server.token
        if token is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self.error(401, "GatedRepo", "Invalid credentials in Authorization header")
        return False

    def do_HEAD(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def handle_any(self):
        self.record()
        url = urlparse(self.path)
        path = unquote(url.path)
        m = re.fullmatch(r"/lfs/([0-9a-f]{64})", path)
        if m:
            return self.serve_lfs(m.group(1))
        if not self.authorized():
            return
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(refs|revision|tree)(?:/(.*))?", path)
        if m:
            repo = self.server.repos.get(m.group(1))
            if repo is None:
                return self.error(404, "RepoNotFound", f"Repository {m.group(1)} not found")
            return self.api(repo, m.group(2), m.group(3) or "", parse_qs(url.query))
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            repo = self.server.repos.get(m.group(1))
            if repo is None:
                return self.error(404, "RepoNotFound", f"Repository {m.group(1)} not found")
            return self.resolve(repo, m.group(2), m.group(3))
        self.error(404, "EntryNotFound", f"no route for {path}")

    def api(self, repo, kind, rest, query):
        if kind == "refs":
            branches = [
                {"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                for b, c in sorted(repo.branches.items())
            ]
            return self.send(200, json.dumps({"branches": branches, "tags": [], "converts": []}).encode())
        rev = rest.split("/")[0] if kind == "tree" else rest
        commit = repo.commit(rev)
        if commit is None:
            return self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        files = repo.commits[commit]
        if kind == "revision":
            body = {
                "id": repo.id,
                "modelId": repo.id,
                "sha": commit,
                "private": False,
                "siblings": [{"rfilename": p} for p in sorted(files)],
            }
            return self.send(200, json.dumps(body).encode())
        entries = []
        for p in sorted(files):
            f = files[p]
            e = {"type": "file", "oid": f["git"], "size": f["size"], "path": p}
            if f["lfs"]:
                e["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": 134}
            entries.append(e)
        start = int(query.get("cursor", ["0"])[0])
        page = self.server.page_size
        headers = {}
        if start + page < len(entries):
            q = f"recursive=true&cursor={start + page}"
            headers["Link"] = (
                f'<http://127.0.0.1:{self.server.server_port}/api/models/{repo.id}/tree/{rev}?{q}>; rel="next"'
            )
        self.send(200, json.dumps(entries[start:start + page]).encode(), headers)

    def resolve(self, repo, rev, path):
        commit = repo.commit(rev)
        if commit is None:
            return self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        f = repo.commits[commit].get(path)
        if f is None:
            return self.error(404, "EntryNotFound", f"{path} does not exist on {rev}", )
        if f["lfs"] and commit in self.server.fail_commits:
            return self.error(500, "InternalError", "simulated server error")
        if f["lfs"]:
            port = self.server.server_port
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/lfs/{f['sha256']}")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{f["git"]}"')
            self.send_header("X-Linked-Etag", f'"{f["sha256"]}"')
            self.send_header("X-Linked-Size", str(f["size"]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(f["path"], "rb").read()
        self.send_range(data, {"X-Repo-Commit": commit, "ETag": f'"{f["git"]}"'}, slow=False)

    def serve_lfs(self, sha):
        full = self.server.blobs.get(sha)
        if full is None:
            return self.error(404, "EntryNotFound", "no such object")
        data = open(full, "rb").read()
        self.send_range(data, {"ETag": f'"{sha}"', "Accept-Ranges": "bytes"}, slow=True)

    def send_range(self, data, headers, slow):
        start = 0
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        status = 200
        if m and int(m.group(1)) < len(data):
            start = int(m.group(1))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        slow_after = self.server.slow if slow else None
        sent = 0
        try:
            while sent < len(body):
                chunk = body[sent:sent + 4096]
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                if slow_after is not None and start + sent >= slow_after:
                    time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", action="append", default=[])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    ap.add_argument("--token")
    ap.add_argument("--slow", type=int)
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--fail-branch", action="append", default=[])
    a = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.repos = {}
    server.blobs = {}
    for spec in a.repo:
        repo_id, root = spec.split("=", 1)
        r = Repo(repo_id, root)
        server.repos[repo_id] = r
        server.blobs.update(r.blobs)
    server.log = a.log
    server.token = a.token
    server.slow = a.slow
    server.page_size = a.page_size
    server.fail_commits = {
        r.branches[b] for r in server.repos.values() for b in a.fail_branch if b in r.branches
    }
    server.lock = threading.Lock()
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, a.port_file)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
