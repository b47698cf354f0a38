"""ETag comparison (RFC 9110, weak): what matches, and the near misses that must not."""
import pytest

from app.http.conditional import matches, strip_validator

CURRENT = "9f86d081884c7d65"


@pytest.mark.parametrize("header", [
    f'"{CURRENT}"',
    f'W/"{CURRENT}"',                      # a proxy that gzips turns strong tags weak
    f'"0000000000000000", "{CURRENT}"',
    f' W/"{CURRENT}" ,"other"',
    "*",
])
def test_matching_validators(header):
    assert matches(header, CURRENT)


@pytest.mark.parametrize("header", [
    f'"x{CURRENT}"',                       # contains the tag
    f'"{CURRENT}x"',
    f'"{CURRENT[:-1]}"',                   # a prefix of it
    f'"{CURRENT.upper()}"',                # tags compare exactly, case included
    f'"{CURRENT}, other"',                 # one tag that merely contains a comma
    f'W/"{CURRENT[1:]}"',
    '""',
    "",
    None,
])
def test_near_misses_do_not_match(header):
    assert not matches(header, CURRENT)


def test_strip_validator_keeps_the_opaque_part_only():
    assert strip_validator(f' W/"{CURRENT}" ') == CURRENT
    assert strip_validator(f'"{CURRENT}"') == CURRENT


@pytest.mark.parametrize("near", ['"x{tag}"', '"{tag}x"', 'W/"{tag}0"'])
def test_a_near_miss_gets_the_full_snapshot(seeded, client, auth, near):
    first = client.get("/me/communities", headers=auth("u-ada"))
    tag = first.headers["ETag"].strip('"')
    again = client.get("/me/communities", headers={**auth("u-ada"), "If-None-Match": near.format(tag=tag)})
    assert again.status_code == 200 and again.json["hash"] == tag


def test_a_near_miss_hash_is_not_taken_for_the_poll_s_own(seeded, client, auth):
    body = client.get("/me/communities", headers=auth("u-ada")).json
    answer = client.get(
        f"/community-changes/poll?cursor={body['cursor']}&hash={body['hash']}0&timeout=0",
        headers=auth("u-ada"),
    ).json
    assert answer["status"] == "reset" and answer["hash"] == body["hash"]
