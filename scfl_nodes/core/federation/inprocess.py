"""An in-process, plaintext stand-in for the cloud's round protocol (the reference transport).

It answers the calls of :class:`scfl_cloud.client.CloudClient` that the federation client
and a fleet coordinator make (create skill, open round, list/status, upload, download), with
the cloud's semantics: a round belongs to (skill, base version), closes at its quorum, and
publishes the SUM of its uploads as the skill's next version. Uploads are
:class:`~scfl_nodes.core.federation.codecs.PlainCodec` blobs, summed in float64.
"""

from __future__ import annotations

import time

import numpy as np

from .codecs import pack_plain, unpack_plain


class InProcessCloud:
    def __init__(self):
        self._rounds: dict[int, dict] = {}
        self._versions: dict[str, int] = {}
        self._next_round = 1

    # -- fleet management (admin) ---------------------------------------------------------
    def create_skill(self, name, task_descriptions=(), *, skill_id=None, description="", extra=None, token=None):
        self._versions.setdefault(skill_id or name, 0)
        return {"skill_id": skill_id or name}

    def open_round(self, skill_id, base_version, quorum, deadline_s, key_id=None, min_participants=1):
        if skill_id not in self._versions:
            raise KeyError(f"unknown skill {skill_id!r}")
        if any(r["skill_id"] == skill_id and r["state"] == "open" for r in self._rounds.values()):
            raise RuntimeError(f"a round is still open for skill {skill_id!r}")
        rid = self._next_round
        self._next_round += 1
        self._rounds[rid] = {"round_id": rid, "skill_id": skill_id, "base_version": int(base_version),
                             "quorum": int(quorum), "state": "open", "contributors": [], "sum": None,
                             "weights": [], "published_version": None, "folded": 0, "accepted": 0,
                             "opened_at": time.time(), "close_reason": None}
        return self._info(rid)

    # -- what robots call ----------------------------------------------------------------
    def _info(self, rid: int) -> dict:
        r = self._rounds[rid]
        return {k: v for k, v in r.items() if k not in ("sum", "weights")}

    def list_rounds(self, state=None):
        return [self._info(rid) for rid, r in self._rounds.items() if state is None or r["state"] == state]

    def round_status(self, round_id):
        return self._info(int(round_id))

    def upload_delta(self, token, blob):
        header, tensors = unpack_plain(blob)
        r = self._rounds.get(int(header["round_id"]))
        if r is None or r["state"] != "open":
            raise RuntimeError(f"round {header['round_id']} is not open")
        if r["skill_id"] != header["skill_id"] or r["base_version"] != int(header["base_version"]):
            raise RuntimeError("upload does not match its round's skill / base version")
        if header["robot_id"] in r["contributors"]:
            raise RuntimeError(f"robot {header['robot_id']!r} already contributed to round {r['round_id']}")
        if r["sum"] is None:
            r["sum"] = {k: np.asarray(v, dtype=np.float64).copy() for k, v in tensors.items()}
        else:
            if list(r["sum"]) != list(tensors):
                raise RuntimeError("upload's tensors differ from the round's")
            for k, v in tensors.items():
                r["sum"][k] += v
        r["contributors"].append(header["robot_id"])
        r["weights"].append(float(header["weight"]))
        r["accepted"] = r["folded"] = len(r["contributors"])
        if r["folded"] >= r["quorum"]:
            r["state"] = "published"
            r["close_reason"] = "quorum"
            self._versions[r["skill_id"]] += 1
            r["published_version"] = self._versions[r["skill_id"]]
        return {"round_id": r["round_id"], "robot_id": header["robot_id"]}

    def wait_for_round(self, round_id, state="published", timeout=60.0, poll_s=0.1):
        info = self._info(int(round_id))
        if info["state"] != state:
            raise TimeoutError(f"round {round_id} is {info['state']}: an in-process round only publishes at its quorum")
        return info

    def download_aggregate(self, round_id):
        r = self._rounds[int(round_id)]
        if r["state"] != "published":
            raise RuntimeError(f"round {round_id} is not published")
        header = {"skill_id": r["skill_id"], "round_id": r["round_id"], "count": len(r["contributors"]),
                  "total_weight": float(sum(r["weights"]))}
        return pack_plain(header, r["sum"])  # float64: the exact reference sum
