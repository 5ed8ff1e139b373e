"""Drives the test Cloudinary emulator with Cloudinary's official Python SDK (PyPI `cloudinary`).

Run by `official_python_sdk_agrees_with_the_emulator` in tests/cloudinary_emulator.rs, which
starts an emulator, seeds it (below) and passes CLOUDINARY_URL
(`cloudinary://KEY:SECRET@CLOUD?upload_prefix=http://127.0.0.1:PORT`). Every check asserts what
the SDK hands back; the first that fails ends the script with a non-zero exit and its reason.

Seeded by the Rust test: images `sdk/img1` … `sdk/img5` (created one minute apart, `img1`
oldest), the video `sdk/clip` and the raw file `sdk/notes.txt`, all of delivery type `upload`,
with the hourly allowance at 500 calls.
"""

import calendar
import sys
import time

import cloudinary
import cloudinary.api
import cloudinary.exceptions
import cloudinary.uploader
from cloudinary.search import Search

IMAGES = [f"sdk/img{i}" for i in range(1, 6)]
LIMIT = 500


def check(name, condition, detail=""):
    if not condition:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok: {name}")


def rate_limit_headers_are_read():
    first = cloudinary.api.ping()
    second = cloudinary.api.ping()
    check("rate_limit_allowed", first.rate_limit_allowed == LIMIT, first.rate_limit_allowed)
    check(
        "rate_limit_remaining counts down",
        isinstance(first.rate_limit_remaining, int)
        and second.rate_limit_remaining == first.rate_limit_remaining - 1,
        (first.rate_limit_remaining, second.rate_limit_remaining),
    )
    reset = first.rate_limit_reset_at
    # The SDK parses the HTTP date of X-FeatureRateLimit-Reset (GMT) into a time tuple.
    check("rate_limit_reset_at is a date", reset is not None, reset)
    now = time.time()
    check(
        "rate_limit_reset_at is within the hour ahead",
        now - 5 <= calendar.timegm(reset) <= now + 3600 + 5,
        reset,
    )


def listing_pages_with_next_cursor():
    seen = []
    pages = 0
    cursor = None
    while True:
        options = dict(type="upload", resource_type="image", prefix="sdk/", max_results=2)
        if cursor:
            options["next_cursor"] = cursor
        page = cloudinary.api.resources(**options)
        pages += 1
        seen += [r["public_id"] for r in page["resources"]]
        for r in page["resources"]:
            check(f"listed {r['public_id']} is an image", r["resource_type"] == "image", r)
        cursor = page.get("next_cursor")
        if not cursor:
            break
        check("a listing ends", pages < 10, pages)
    check("listing pages of 2", pages == 3, pages)
    check("listing holds each image once", sorted(seen) == IMAGES, seen)
    videos = cloudinary.api.resources(type="upload", resource_type="video", max_results=10)
    check(
        "a video listing holds the video",
        [r["public_id"] for r in videos["resources"]] == ["sdk/clip"],
        videos["resources"],
    )


def resources_by_ids_finds_what_exists():
    found = cloudinary.api.resources_by_ids(
        ["sdk/img1", "sdk/img3", "sdk/absent"], resource_type="image", type="upload"
    )
    ids = sorted(r["public_id"] for r in found["resources"])
    check("resources_by_ids", ids == ["sdk/img1", "sdk/img3"], ids)
    raw = cloudinary.api.resources_by_ids(["sdk/notes.txt"], resource_type="raw")
    check(
        "resources_by_ids of a raw file",
        [r["public_id"] for r in raw["resources"]] == ["sdk/notes.txt"],
        raw["resources"],
    )


def search_pages_with_next_cursor():
    seen = []
    pages = 0
    cursor = None
    total = None
    while True:
        search = (
            Search()
            .expression("resource_type:image AND folder:sdk")
            .sort_by("public_id", "asc")
            .max_results(2)
        )
        if cursor:
            search = search.next_cursor(cursor)
        page = search.execute()
        pages += 1
        total = page.get("total_count")
        seen += [r["public_id"] for r in page["resources"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
        check("a search ends", pages < 10, pages)
    check("search total_count", total == 5, total)
    check("search pages of 2", pages == 3, pages)
    check("search sorted by public_id", seen == IMAGES, seen)


def rename_refuses_without_overwrite_and_moves_otherwise():
    try:
        cloudinary.uploader.rename("sdk/img1", "sdk/img2", overwrite=False, invalidate=True)
    except cloudinary.exceptions.Error as e:
        check("rename onto an existing public_id is refused", "already exists" in str(e), e)
    else:
        raise AssertionError("rename without overwrite onto sdk/img2 was not refused")
    both = cloudinary.api.resources_by_ids(["sdk/img1", "sdk/img2"], resource_type="image")
    check("a refused rename moves nothing", len(both["resources"]) == 2, both["resources"])

    moved = cloudinary.uploader.rename(
        "sdk/img1", "assetgc-trash/20260101T000000Z/sdk/img1", overwrite=False, invalidate=True
    )
    check(
        "rename answers the resource at its new public_id",
        moved["public_id"] == "assetgc-trash/20260101T000000Z/sdk/img1",
        moved,
    )
    after = cloudinary.api.resources_by_ids(
        ["sdk/img1", "assetgc-trash/20260101T000000Z/sdk/img1"], resource_type="image"
    )
    check(
        "the renamed asset is only at its new public_id",
        [r["public_id"] for r in after["resources"]]
        == ["assetgc-trash/20260101T000000Z/sdk/img1"],
        after["resources"],
    )
    back = cloudinary.uploader.rename(
        "sdk/img3",
        "sdk/img2",
        overwrite=True,
        invalidate=True,
    )
    check("rename with overwrite replaces", back["public_id"] == "sdk/img2", back)
    try:
        cloudinary.uploader.rename("sdk/absent", "sdk/elsewhere", invalidate=True)
    except cloudinary.exceptions.NotFound:
        print("ok: rename of a missing public_id is NotFound")
    else:
        raise AssertionError("rename of a missing public_id did not fail")


def delete_resources_says_what_went():
    first = cloudinary.api.delete_resources(["sdk/img5", "sdk/absent"], resource_type="image")
    check(
        "delete_resources",
        first["deleted"] == {"sdk/img5": "deleted", "sdk/absent": "not_found"},
        first,
    )
    again = cloudinary.api.delete_resources(["sdk/img5"], resource_type="image")
    check("delete_resources again", again["deleted"] == {"sdk/img5": "not_found"}, again)
    left = cloudinary.api.resources(type="upload", resource_type="image", prefix="sdk/")
    check(
        "what is left",
        sorted(r["public_id"] for r in left["resources"]) == ["sdk/img2", "sdk/img4"],
        left["resources"],
    )


def main():
    config = cloudinary.config()
    check("the SDK read CLOUDINARY_URL", bool(config.cloud_name and config.upload_prefix), config)
    rate_limit_headers_are_read()
    listing_pages_with_next_cursor()
    resources_by_ids_finds_what_exists()
    search_pages_with_next_cursor()
    rename_refuses_without_overwrite_and_moves_otherwise()
    delete_resources_says_what_went()
    print(f"cloudinary SDK {cloudinary.VERSION}: every check passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
