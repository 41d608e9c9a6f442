"""The prune plan: which tags the retention rules keep, and which digests go (pure).

Input: every tag of the registry, as ``fab catalog`` reads it (repository, tag,
digest, size, creation time, index or image), and the inventory's ``retention``
rules; output: one decision per tag, with the rule and the reason, and the
manifests to delete by digest.

The safety rules, each unit-tested:

- a repository no rule matches is never touched (the first matching rule applies);
- distribution deletes by digest, so a digest goes only when every tag pointing
  to it in its repository is a candidate: one kept tag keeps them all;
- a multi-arch index is one manifest, kept or deleted whole; its per-platform
  manifests are never deleted on their own, tagged or not, while it is kept
  (prune never asks for untagged ones);
- a tag whose creation time is unknown is kept;
- a plan that would delete every tag of a repository is refused unless allowed.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from tasks.errors import RegkitError
from tasks.inventory import RetentionRule, duration_seconds
from tasks.rights import covers


@dataclass(frozen=True)
class Image:
    """One tag as the registry's API describes it."""

    repository: str
    tag: str
    digest: str
    size: int
    created: str  # RFC 3339, "" when unknown (an index has no config)
    index: bool = False
    children: tuple[str, ...] = ()  # an index's per-platform manifests (digests)


@dataclass(frozen=True)
class Decision:
    image: Image
    rule: int  # index of the rule in the inventory
    keep: bool
    reason: str


@dataclass(frozen=True)
class Deletion:
    """One manifest to delete, and every tag that goes with it."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    size: int


@dataclass
class PrunePlan:
    decisions: list[Decision] = field(default_factory=list)
    deletions: list[Deletion] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)  # repositories no rule matches

    @property
    def freed(self) -> int:
        """Bytes the deleted manifests name (shared layers may free less)."""
        return sum(d.size for d in self.deletions)


def parse_time(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def rule_for(rules: list[RetentionRule], repository: str) -> int | None:
    return next((i for i, r in enumerate(rules) if covers(r.repositories, repository)), None)


def judge(
    rule: RetentionRule, images: list[Image], now: dt.datetime
) -> dict[str, tuple[bool, str]]:
    """tag -> (keep, reason) for one repository's tags under ``rule``."""
    # Tags of unknown age are kept anyway, and take no place among the newest.
    dated = [(t, i.tag) for i in images if (t := parse_time(i.created)) is not None]
    newest_first = [tag for _, tag in sorted(dated, reverse=True)]
    last = set(newest_first[: rule.keep_last]) if rule.keep_last is not None else set()
    window = duration_seconds(rule.keep_newer_than) if rule.keep_newer_than else None
    out: dict[str, tuple[bool, str]] = {}
    for image in images:
        created = parse_time(image.created)
        if any(re.search(p, image.tag) for p in rule.keep_tags):
            out[image.tag] = (True, "keep_tags")
        elif rule.delete_tags and not any(re.search(p, image.tag) for p in rule.delete_tags):
            out[image.tag] = (True, "not in delete_tags")
        elif created is None:
            out[image.tag] = (True, "creation time unknown")
        elif image.tag in last:
            out[image.tag] = (True, f"among the {rule.keep_last} newest")
        elif window is not None and (now - created).total_seconds() < window:
            out[image.tag] = (True, f"newer than {rule.keep_newer_than}")
        else:
            out[image.tag] = (False, "older than what the rule keeps")
    return out


def plan(
    rules: list[RetentionRule], images: list[Image], now: dt.datetime, allow_empty: bool = False
) -> PrunePlan:
    """Every tag's decision and the manifests to delete; raises when a repository would
    lose every tag and ``allow_empty`` is not given."""
    result = PrunePlan()
    by_repo: dict[str, list[Image]] = {}
    for image in images:
        by_repo.setdefault(image.repository, []).append(image)
    for repository, tags in sorted(by_repo.items()):
        number = rule_for(rules, repository)
        if number is None:
            result.untouched.append(repository)
            continue
        verdicts = judge(rules[number], tags, now)
        # A digest goes only if no kept tag points to it, nor a kept index lists it.
        kept = [i for i in tags if verdicts[i.tag][0]]
        platforms = {child for i in kept for child in i.children}
        kept_digests = {i.digest for i in kept} | platforms
        for image in sorted(tags, key=lambda i: i.tag):
            keep, reason = verdicts[image.tag]
            if not keep and image.digest in platforms:
                keep, reason = True, "a platform of a kept multi-arch index"
            elif not keep and image.digest in kept_digests:
                keep, reason = True, "shares its digest with a kept tag"
            result.decisions.append(Decision(image, number, keep, reason))
        doomed: dict[str, list[Image]] = {}
        for image in tags:
            if image.digest not in kept_digests:
                doomed.setdefault(image.digest, []).append(image)
        if doomed and not kept_digests and not allow_empty:
            raise RegkitError(
                f"retention rule {number + 1} would delete every tag of {repository}; "
                "check the rule, or pass --allow-empty for this run"
            )
        result.deletions += [
            Deletion(repository, digest, tuple(sorted(i.tag for i in group)), group[0].size)
            for digest, group in sorted(doomed.items())
        ]
    return result
