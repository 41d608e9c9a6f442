"""Retention's planning logic: rules and tags in, decisions and deletions out (pure)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tasks import prune as prune_task
from tasks.errors import RegkitError
from tasks.inventory import RetentionRule
from tasks.plans import prune
from tasks.plans.prune import Image

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)


def days_ago(n: int) -> str:
    return (NOW - dt.timedelta(days=n)).isoformat().replace("+00:00", "Z")


def image(tag: str, age: int, digest: str = "", repo: str = "ci/app", **kw: object) -> Image:
    return Image(repo, tag, digest or f"sha256:{tag}", 100, days_ago(age) if age >= 0 else "", **kw)


def rule(**kw: object) -> RetentionRule:
    return RetentionRule.model_validate({"repositories": ["ci/*"], **kw})


def kept(plan: prune.PrunePlan) -> list[str]:
    return sorted(d.image.tag for d in plan.decisions if d.keep)


def test_keep_last_and_keep_tags_keep_the_newest_and_the_releases() -> None:
    images = [image(f"b{n:02}", age=n) for n in range(12)] + [image("release-1", age=40)]
    plan = prune.plan([rule(keep_last=3, keep_tags=["^release-"])], images, NOW)
    assert kept(plan) == ["b00", "b01", "b02", "release-1"]
    assert [d.tags for d in plan.deletions] == [(f"b{n:02}",) for n in range(3, 12)]
    reasons = {d.image.tag: d.reason for d in plan.decisions}
    assert reasons["b00"] == "among the 3 newest"
    assert reasons["release-1"] == "keep_tags"
    assert reasons["b11"] == "older than what the rule keeps"
    assert plan.freed == 900


def test_keep_newer_than_keeps_recent_tags() -> None:
    images = [image("new", age=2), image("old", age=60)]
    plan = prune.plan([rule(keep_newer_than="30d")], images, NOW)
    assert kept(plan) == ["new"]


def test_a_digest_with_one_kept_tag_keeps_every_tag_on_it() -> None:
    same = "sha256:same"
    images = [image("v1.0.0", age=90, digest=same), image("b7", age=90, digest=same),
              image("b8", age=1)]  # fmt: skip
    plan = prune.plan([rule(keep_last=1, keep_tags=[r"^v\d"])], images, NOW)
    assert kept(plan) == ["b7", "b8", "v1.0.0"]
    assert plan.deletions == []
    assert {d.image.tag: d.reason for d in plan.decisions}["b7"] == (
        "shares its digest with a kept tag"
    )


def test_two_candidate_tags_on_one_digest_go_as_one_deletion() -> None:
    images = [image("a", age=50, digest="sha256:x"), image("b", age=50, digest="sha256:x"),
              image("c", age=1)]  # fmt: skip
    plan = prune.plan([rule(keep_last=1)], images, NOW)
    assert [(d.digest, d.tags) for d in plan.deletions] == [("sha256:x", ("a", "b"))]


def test_an_index_without_a_creation_time_is_kept_whole() -> None:
    images = [image("multi", age=-1, index=True), image("b1", age=1), image("b2", age=90)]
    plan = prune.plan([rule(keep_last=1)], images, NOW)
    assert kept(plan) == ["b1", "multi"]
    assert {d.image.tag: d.reason for d in plan.decisions}["multi"] == "creation time unknown"


def test_the_platforms_of_a_kept_index_stay_even_when_tagged_old() -> None:
    images = [
        image("multi", age=-1, index=True, children=("sha256:amd", "sha256:arm")),
        image("amd", age=90, digest="sha256:amd"),
        image("arm", age=90, digest="sha256:arm"),
        image("fresh", age=0),
    ]
    plan = prune.plan([rule(keep_last=1)], images, NOW)
    assert kept(plan) == ["amd", "arm", "fresh", "multi"]
    assert plan.deletions == []
    assert {d.image.tag: d.reason for d in plan.decisions}["amd"] == (
        "a platform of a kept multi-arch index"
    )


def test_delete_tags_limits_the_candidates() -> None:
    images = [image("pr-1", age=90), image("main", age=90), image("pr-2", age=1)]
    plan = prune.plan([rule(keep_last=0, delete_tags=["^pr-"])], images, NOW)
    assert kept(plan) == ["main"]


def test_a_repository_no_rule_matches_is_untouched() -> None:
    images = [image("old", age=900, repo="team-a/app")]
    plan = prune.plan([rule(keep_last=0)], images, NOW)
    assert plan.decisions == [] and plan.deletions == [] and plan.untouched == ["team-a/app"]


def test_the_first_matching_rule_applies() -> None:
    rules = [rule(repositories=["ci/app"], keep_last=2), rule(keep_last=0)]
    images = [image(f"t{n}", age=n) for n in range(4)]
    plan = prune.plan(rules, images, NOW)
    assert kept(plan) == ["t0", "t1"] and {d.rule for d in plan.decisions} == {0}


def test_emptying_a_repository_needs_allow_empty() -> None:
    images = [image("a", age=90), image("b", age=91)]
    with pytest.raises(
        RegkitError, match=r"rule 1 would delete every tag of ci/app; .*--allow-empty"
    ):
        prune.plan([rule(keep_last=0)], images, NOW)
    assert len(prune.plan([rule(keep_last=0)], images, NOW, allow_empty=True).deletions) == 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("keep_newer_than", "30 days", "is not a duration"),
        ("keep_tags", ["(unclosed"], "is not a regular expression"),
        ("repositories", [], "give at least one repository pattern"),
        ("repositories", ["Team A"], "is not a repository pattern"),
        ("keep_last", -1, "greater than or equal to 0"),
    ],
)
def test_rules_are_checked(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetentionRule.model_validate({"repositories": ["ci/*"], field: value})


def test_the_json_plan_has_one_object_per_tag_as_the_table() -> None:
    images = [image("b0", age=0), image("b1", age=1, digest="sha256:" + "a" * 64)]
    plan = prune.plan([rule(keep_last=1)], images, NOW)
    lines = [json.loads(line) for line in prune_task.json_lines(plan, "regbox").splitlines()]
    assert lines[1] == {
        "host": "regbox",
        "repository": "ci/app",
        "tag": "b1",
        "digest": "sha256:" + "a" * 64,
        "created": "2026-11-28T12:00:00Z",
        "size": 100,
        "rule": 1,
        "decision": "delete",
        "reason": "older than what the rule keeps",
    }
    assert [(line["tag"], line["decision"]) for line in lines] == [("b0", "keep"), ("b1", "delete")]
    table = prune_task.table(plan, NOW).splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "DIGEST", "AGE", "SIZE", "RULE", "DECISION"]
    assert table[2].split() == [
        "ci/app", "b1", "sha256:aaaaaaaaaaaa", "1d", "100", "B", "1", "delete:", "older",
        "than", "what", "the", "rule", "keeps",
    ]  # fmt: skip
    assert table[-1] == (
        "1 tag (1 manifest, 100 B) to delete, 1 kept; 0 repositories no rule matches left alone"
    )
