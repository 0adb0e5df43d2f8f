"""The status page at ``/`` rendered by a real headless Chromium against the real server."""

from __future__ import annotations

import shutil
import struct
import subprocess

import httpx
import pytest

from cloud_fixtures import DB_KINDS, RobotHelper, make_db_url
from cloud_fixtures import fleet_key, pg_cluster  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(300)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium not installed (apt-get install chromium, see scripts/apt-packages.txt)")


def _run_chromium(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chrome-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("db_kind", DB_KINDS)
def test_status_page_in_headless_chromium(request, tmp_path, db_kind, fleet_key):
    from scfl_cloud.testing import CloudServer

    db_url = make_db_url(db_kind, request, tmp_path)
    with CloudServer(tmp_path / "cloud", db_url) as server:
        admin = server.admin_client()
        admin.put_fleet_context(fleet_key.cloud_context())
        done = admin.create_skill("drawer-close", ["push the drawer closed"], skill_id="skill_drawer")["skill_id"]
        live = admin.create_skill("door-lock", ["lock the door"], skill_id="skill_door")["skill_id"]
        bots = [RobotHelper(f"arm-{i}", admin, fleet_key, seed=i) for i in range(4)]
        r1 = admin.open_round(done, 0, quorum=3, deadline_s=600, secure_aggregation=False)["round_id"]
        for bot in bots[:3]:
            server.client(bot.token).upload_delta(bot.token, bot.delta(done, r1)[1])
        admin.wait_for_round(r1, timeout=60)
        r2 = admin.open_round(live, 0, quorum=3, deadline_s=600, secure_aggregation=False)["round_id"]
        server.client(bots[3].token).upload_delta(bots[3].token, bots[3].delta(live, r2)[1])

        png = tmp_path / "status.png"
        shot = _run_chromium([f"--screenshot={png}", "--window-size=1280,900", server.url + "/"], tmp_path)
        assert png.is_file(), shot.stderr[-2000:]
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (1280, 900)
        assert len(data) > 20_000  # a blank page compresses to a few kB; tables and text do not
        # a page with real content has many distinct colours; count them in the decoded image
        try:
            from PIL import Image

            colours = Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 50
        except ImportError:  # pragma: no cover - Pillow ships with matplotlib here
            pass

        dom = _run_chromium(["--dump-dom", server.url + "/"], tmp_path)
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert "<title>scfl cloud status</title>" in html
        for text in ("skill_drawer", "skill_door", "push the drawer closed", "robot identities need the admin token",
                     f"#{r1}", f"#{r2}", "published", "(quorum)", "fold per delta", "routing"):
            assert text in html, text
        # the public page shows counts, never identities (robot ids, keys, contributors)
        assert not any(f"arm-{i}" in html for i in range(4))
        private = httpx.get(server.url + "/", headers={"Authorization": f"Bearer {server.admin_token}"}).text
        assert all(f"arm-{i}" in private for i in range(4))
        assert 'id="n-robots">4<' in html and 'id="n-open">1<' in html and 'id="n-versions">1<' in html
        # the in-progress round shows its progress: 0 or 1 folded / 1 accepted / quorum 3
        assert " / 1 / 3" in html
        assert server.log_tail().count("Traceback") == 0
    request.node.screenshot = png  # for humans debugging the test
