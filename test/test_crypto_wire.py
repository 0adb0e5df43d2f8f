"""Wire format: signed deltas and aggregates reject every kind of bad bytes precisely."""

from __future__ import annotations

import numpy as np
import pytest

from scfl_nodes.core.crypto import (
    EncryptedAggregate,
    EncryptedDelta,
    KeyMismatchError,
    ReplayError,
    RoundMismatchError,
    SignatureError,
    TamperedError,
    TruncatedError,
    WrongBackendError,
    WrongParametersError,
    check_expected,
    encrypt_delta,
    generate_fleet_keys,
    generate_signing_key,
)
from scfl_nodes.core.crypto.wire import DIGEST_LEN, MAGIC_DELTA, SIGNATURE_LEN, PrefixHasher, pack


@pytest.fixture(scope="module")
def fleet():
    return generate_fleet_keys("rlwe")


@pytest.fixture(scope="module")
def signer():
    return generate_signing_key()


def make(fleet, signer, robot="r0", round_id=5, values=None, **kw):
    tensors = {"w": np.linspace(-0.5, 0.5, 3000, dtype=np.float32).reshape(30, 100), "b": np.ones(7, np.float32) * 0.1}
    if values is not None:
        tensors = values
    return encrypt_delta(
        fleet, tensors, skill_id="open-drawer", base_version=4, round_id=round_id, robot_id=robot,
        signing_key=signer, clip=1.0, num_clients=10, **kw,
    )


def test_roundtrip_and_header(fleet, signer):
    delta = make(fleet, signer)
    blob = delta.to_bytes()
    back = EncryptedDelta.from_bytes(blob)
    back.verify(signer.public_bytes())
    assert back.to_bytes() == blob
    h = back.header
    for field in ("version", "backend", "params_id", "key_id", "skill_id", "base_version", "round_id", "robot_id", "shapes"):
        assert field in h
    assert (h["backend"], h["params_id"], h["key_id"]) == ("rlwe", fleet.params_id, fleet.key_id)
    assert (h["skill_id"], h["base_version"], h["round_id"], h["robot_id"]) == ("open-drawer", 4, 5, "r0")
    assert back.shapes == {"w": (30, 100), "b": (7,)}
    check_expected(back, context=fleet.cloud_context(), skill_id="open-drawer", base_version=4, round_id=5)


@pytest.mark.parametrize("chunk", [1, 95, 96, 97, 65536, 10**9])
def test_one_pass_hasher_gives_both_digests(fleet, signer, chunk):
    """The cloud hashes an upload once as it streams in: the whole body (its blob name) and
    the prefix the container digest covers, whatever the chunking."""
    import hashlib

    blob = make(fleet, signer).to_bytes()
    hasher = PrefixHasher(DIGEST_LEN + SIGNATURE_LEN)
    for i in range(0, len(blob), chunk):
        hasher.update(blob[i:i + chunk])
    whole, prefix = hasher.digests()
    assert whole == hashlib.sha256(blob).digest()
    assert prefix == hashlib.sha256(blob[:-96]).digest() == blob[-96:-64]
    EncryptedDelta.from_bytes(blob, prefix).verify(signer.public_bytes())
    # a precomputed digest is compared, not trusted: one of other bytes is refused
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 1
    other = PrefixHasher(DIGEST_LEN + SIGNATURE_LEN)
    other.update(bytes(flipped))
    with pytest.raises(TamperedError):
        EncryptedDelta.from_bytes(bytes(flipped), other.digests()[1])
    with pytest.raises(TamperedError):
        EncryptedDelta.from_bytes(blob, hashlib.sha256(b"something else").digest())


@pytest.mark.parametrize("where", ["payload", "header", "digest", "signature"])
def test_flipped_bit_is_rejected(fleet, signer, where):
    delta = make(fleet, signer)
    blob = bytearray(delta.to_bytes())
    head_len = int.from_bytes(blob[10:14], "little")
    offset = {
        "header": 14 + head_len // 2,
        "payload": 14 + head_len + 8 + 1234,
        "digest": len(blob) - 64 - 5,
        "signature": len(blob) - 3,
    }[where]
    blob[offset] ^= 0x10
    if where == "signature":  # the bytes are intact, but the robot did not sign them
        with pytest.raises(SignatureError):
            EncryptedDelta.from_bytes(bytes(blob)).verify(signer.public_bytes())
    else:
        with pytest.raises(TamperedError):
            EncryptedDelta.from_bytes(bytes(blob))


def test_swapped_header_field_is_rejected(fleet, signer):
    """Changing the round (or robot) and even recomputing the digest fails the signature."""
    delta = make(fleet, signer, round_id=5)
    for field, value in (("round_id", 6), ("robot_id", "r9"), ("skill_id", "other"), ("base_version", 3)):
        header = dict(delta.header, **{field: value})
        prefix, digest = pack(MAGIC_DELTA, header, delta.payload)  # attacker recomputes the digest
        forged = EncryptedDelta.from_bytes(prefix + digest + delta.signature)
        with pytest.raises(SignatureError):
            forged.verify(signer.public_bytes())
    # editing the parsed object after the fact is caught too
    edited = EncryptedDelta.from_bytes(delta.to_bytes())
    edited.header["round_id"] = 6
    with pytest.raises(TamperedError):
        edited.verify(signer.public_bytes())
    with pytest.raises(TamperedError):
        EncryptedDelta.from_bytes(edited.to_bytes())


def test_swapping_fields_between_two_uploads_is_rejected(fleet, signer):
    d1, d2 = make(fleet, signer, robot="r1"), make(fleet, signer, robot="r2")
    hybrid = EncryptedDelta(d1.header, d2.payload, d1.digest, d1.signature)
    with pytest.raises(TamperedError):
        EncryptedDelta.from_bytes(hybrid.to_bytes())


def test_signature_of_another_robot_is_rejected(fleet, signer):
    delta = make(fleet, signer)
    with pytest.raises(SignatureError):
        delta.verify(generate_signing_key().public_bytes())
    with pytest.raises(SignatureError):
        delta.verify(b"\x00" * 31)


def test_truncated_and_padded_bytes(fleet, signer):
    blob = make(fleet, signer).to_bytes()
    for cut in (0, 5, 13, 20, 200, len(blob) // 2, len(blob) - 1):
        with pytest.raises(TruncatedError):
            EncryptedDelta.from_bytes(blob[:cut])
    with pytest.raises(TamperedError, match="trailing"):
        EncryptedDelta.from_bytes(blob + b"\x00")
    with pytest.raises(TamperedError, match="bad magic"):
        EncryptedDelta.from_bytes(b"GARBAGE!" + blob[8:])


def test_wrong_key_id_is_rejected(fleet, signer):
    other_fleet = generate_fleet_keys("rlwe")
    foreign = make(other_fleet, signer)
    ctx = fleet.cloud_context()
    with pytest.raises(KeyMismatchError, match="fleet key"):
        ctx.add(None, foreign)
    with pytest.raises(KeyMismatchError):
        check_expected(foreign, key_id=fleet.key_id)
    agg = ctx.add(None, make(fleet, signer, robot="r1"))
    with pytest.raises(KeyMismatchError):
        ctx.add(agg, foreign)
    with pytest.raises(KeyMismatchError):
        other_fleet.decrypt_aggregate(agg)
    with pytest.raises(KeyMismatchError):
        other_fleet.cloud_context().add(agg, make(other_fleet, signer, robot="r2"))


def test_replayed_round_and_duplicate_uploads_are_rejected(fleet, signer):
    ctx = fleet.cloud_context()
    old = make(fleet, signer, robot="r1", round_id=4)
    with pytest.raises(ReplayError, match="old round 4"):
        check_expected(old, context=ctx, round_id=5)
    with pytest.raises(ReplayError):
        ctx.verify_and_add(None, old, signer.public_bytes(), round_id=5)
    with pytest.raises(RoundMismatchError):  # a future round is not a replay but still wrong
        check_expected(make(fleet, signer, round_id=6), round_id=5)
    first = make(fleet, signer, robot="r1")
    agg = ctx.add(None, first)
    with pytest.raises(ReplayError, match="already contributed"):
        ctx.add(agg, EncryptedDelta.from_bytes(first.to_bytes()))  # the very same bytes again
    with pytest.raises(ReplayError, match="already contributed"):
        ctx.add(agg, make(fleet, signer, robot="r1"))  # same robot, fresh ciphertext
    with pytest.raises(ReplayError):  # an old-round upload into the running sum
        ctx.add(agg, make(fleet, signer, robot="r2", round_id=4))
    with pytest.raises(RoundMismatchError):
        ctx.add(agg, make(fleet, signer, robot="r3", values={"w": np.zeros((3, 3), np.float32)}))
    assert agg.count == 1


def test_wrong_backend_and_wrong_parameters(fleet, signer):
    small = generate_fleet_keys("rlwe", params_id="rlwe-n1024-q48-t32-insecure", insecure_for_testing=True)
    delta = make(small, signer)
    with pytest.raises(WrongParametersError):
        fleet.cloud_context().add(None, delta)
    with pytest.raises(WrongParametersError):
        check_expected(delta, params_id=fleet.params_id)
    with pytest.raises(WrongBackendError):
        check_expected(make(fleet, signer), backend="tenseal")
    tenseal_key = generate_fleet_keys("tenseal")
    with pytest.raises(WrongBackendError):
        tenseal_key.cloud_context().add(None, make(fleet, signer))
    with pytest.raises(WrongBackendError):
        fleet.cloud_context().add(None, make(tenseal_key, signer, values={"w": np.ones(10, np.float32) * 0.1}))


def test_aggregate_roundtrip_and_corruption(fleet, signer):
    ctx = fleet.cloud_context()
    agg = ctx.add(None, make(fleet, signer, robot="r1"))
    agg = ctx.add(agg, make(fleet, signer, robot="r2"))
    blob = agg.to_bytes()
    back = EncryptedAggregate.from_bytes(blob)
    assert back.count == 2 and back.robot_ids == ["r1", "r2"] and back.to_bytes() == blob
    np.testing.assert_allclose(fleet.decrypt_aggregate(back)["b"], np.full(7, 0.2), atol=1e-4)
    with pytest.raises(TruncatedError):
        EncryptedAggregate.from_bytes(blob[:-10])
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 1
    with pytest.raises(TamperedError):
        EncryptedAggregate.from_bytes(bytes(flipped))
    with pytest.raises(TamperedError, match="got: encrypted delta"):
        EncryptedAggregate.from_bytes(make(fleet, signer).to_bytes())
    # the running sum continues after a store/load cycle
    back = ctx.add(back, make(fleet, signer, robot="r3"))
    np.testing.assert_allclose(fleet.decrypt_aggregate(back)["b"], np.full(7, 0.3), atol=1e-4)


def test_signed_but_malformed_headers_are_rejected(fleet, signer):
    """A robot with a valid key but a buggy/malicious encoder cannot crash the cloud."""
    delta = make(fleet, signer)
    for field, value in (("round_id", "5"), ("clip", float("nan")), ("weight", -1.0), ("shapes", [["w", [-1]]]),
                         ("mask_cohort", "all"), ("num_values", 1), ("robot_id", None)):
        header = dict(delta.header, **{field: value})
        prefix, digest = pack(MAGIC_DELTA, header, delta.payload)
        with pytest.raises(TamperedError):
            EncryptedDelta.from_bytes(prefix + digest + signer.sign(digest))


def _resigned(delta, signer, payload=None, **changes) -> bytes:
    prefix, digest = pack(MAGIC_DELTA, dict(delta.header, **changes), delta.payload if payload is None else payload)
    return prefix + digest + signer.sign(digest)


def test_tensor_order_is_canonical_and_never_significant(fleet, signer):
    from scfl_nodes.core.crypto import TensorOrderError, quantize

    a = {"w": np.full((30, 100), 0.25, np.float32), "b": np.full(7, -0.5, np.float32)}
    b = {"b": np.full(7, 0.125, np.float32), "w": np.full((30, 100), 0.5, np.float32)}
    da, db = make(fleet, signer, "r0", values=a), make(fleet, signer, "r1", values=b)
    assert da.header["shapes"] == db.header["shapes"] == [["b", [7]], ["w", [30, 100]]]
    ctx = fleet.cloud_context()
    agg = ctx.add(ctx.add(None, da), db)
    got = fleet.decrypt_aggregate(agg)
    np.testing.assert_array_equal(got["w"], np.full((30, 100), 0.75))
    np.testing.assert_array_equal(got["b"], np.full(7, -0.375))
    assert np.array_equal(quantize(a, 1.0, 4), quantize(dict(reversed(list(a.items()))), 1.0, 4))
    # a hand-made header in another order is refused by the same check at upload and in add
    bad = EncryptedDelta.from_bytes(_resigned(db, signer, robot_id="r2", shapes=[["w", [30, 100]], ["b", [7]]]))
    with pytest.raises(TensorOrderError):
        ctx.check_delta(bad)
    with pytest.raises(TensorOrderError):
        ctx.add(None, bad)


@pytest.mark.parametrize("changes, error", [
    ({"version": 1}, WrongParametersError), ({"version": 3}, WrongParametersError), ({"version": -1}, WrongParametersError),
    ({"round_id": -1}, TamperedError), ({"base_version": 2**64}, TamperedError), ({"num_clients": 0}, TamperedError),
    ({"nonce": "ab"}, TamperedError), ({"nonce": "zz" * 16}, TamperedError), ({"weight": 1e308}, TamperedError),
    ({"mask_cohort": ["r0", "r0"]}, TamperedError),
])
def test_malformed_signed_headers_fail_at_parse(fleet, signer, changes, error):
    with pytest.raises(error):
        EncryptedDelta.from_bytes(_resigned(make(fleet, signer), signer, **changes))


def test_check_delta_and_check_joinable_are_what_add_checks(fleet, signer):
    from scfl_nodes.core.crypto import NonceReuseError

    ctx = fleet.cloud_context()
    first = make(fleet, signer, "r0")
    short = EncryptedDelta.from_bytes(_resigned(make(fleet, signer, "r1"), signer, payload=b"\0" * 12))
    for step in (ctx.check_delta, lambda d: ctx.add(None, d)):
        with pytest.raises(TamperedError, match="payload size"):
            step(short)
    agg = ctx.add(None, first)
    reuse = EncryptedDelta.from_bytes(_resigned(make(fleet, signer, "r2"), signer, nonce=first.header["nonce"]))
    bound = ctx.check_delta(reuse)  # fine by itself ...
    with pytest.raises(NonceReuseError):  # ... but not next to the first upload, in both places
        ctx.check_joinable(agg.header, reuse, bound)
    with pytest.raises(NonceReuseError):
        ctx.add(agg, reuse)
    assert agg.count == 1
