"""Placing all of a pod's claims on one node by policy, and writing the claims' ``status.allocation``."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from .capacity import consumed_capacity_field, consumption, format_amount
from .errors import SelectorError
from .fragmentation import TaskKind
from .model import ALLOCATION_MODE_ALL, AllocatedDevice, Claim, Device, parse_claim
from .nodes import Node, Pod, first_untolerated, parse_pod, resource_rejection, resources_fit, static_signature
from .ordering import SortKey
from .policies import PolicyChoice, policy_for
from .policy import PodSearch, packing_score
from .search import (
    CLAIM_MARK,
    Candidates,
    NodeSearch,
    Pick,
    Slot,
    Solution,
    candidates_for,
    claim_marker,
    enough,
    explain,
    selector_sites,
    slots_of,
)
from .search_cache import NodeScores, Outcome, Outline, search_cache
from .state import ClusterState, NodeSummary, task_kinds
from .topology import TOPOLOGY_LEVELS, topology_value

_SHARE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_REASONS_IN_MESSAGE = 5
# (function, *arguments): a node's refusal, worded only if the message shows it (most are never read).
LazyReason = tuple[Any, ...]
_CLAIM_MARKER = re.compile(CLAIM_MARK + r"(\d+)" + CLAIM_MARK)


def new_share_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ClaimPlacement:
    claim_key: str
    claim_uid: str
    allocation: dict[str, Any]  # the claim's status.allocation, ready to write
    results: tuple[AllocatedDevice, ...]  # the same, as the state accounts it
    task_kinds: tuple[TaskKind, ...]  # what the fragmentation policy learns from it


@dataclass(frozen=True, slots=True)
class Placement:
    pod: Pod
    node_name: str
    policy: PolicyChoice
    claims: tuple[ClaimPlacement, ...]  # the claims allocated now; already-allocated claims are not repeated

    @property
    def allocations(self) -> dict[str, dict[str, Any]]:
        """claim key (namespace/name) -> status.allocation."""
        return {c.claim_key: c.allocation for c in self.claims}


@dataclass(frozen=True, slots=True)
class Unplaceable:
    pod: Pod
    reasons: Mapping[str, str]  # node name -> why it cannot take the pod
    message: str  # one line for events and logs


def allocate_pod(
    state: ClusterState,
    pod: Pod | dict[str, Any],
    claims: Sequence[Claim | dict[str, Any]],
    policy: PolicyChoice | None = None,
    *,
    share_ids: Callable[[], str] = new_share_id,
    clock: Callable[[], datetime] = utc_now,
) -> Placement | Unplaceable:
    """Place every claim of ``pod`` on one node, or say per node why that is impossible.

    ``claims`` are the pod's ResourceClaims; allocated ones are honoured as they are and constrain the node.
    ``policy`` is the cluster default, overridden by the pod's hami.io annotations. Nothing is changed: pass the
    result to ``state.commit`` once the allocation is written (or at once, in a simulation).
    """
    pod = parse_pod(pod) if isinstance(pod, dict) else pod
    parsed = [parse_claim(c) if isinstance(c, dict) else c for c in claims]
    choice = policy_for(policy or PolicyChoice(), pod)
    return _Allocation(state, pod, parsed, choice, share_ids, clock).run()


class _Allocation:
    def __init__(
        self,
        state: ClusterState,
        pod: Pod,
        claims: list[Claim],
        choice: PolicyChoice,
        share_ids: Callable[[], str],
        clock: Callable[[], datetime],
    ) -> None:
        self.state = state
        self.pod = pod
        self.choice = choice
        self.share_ids = share_ids
        self.clock = clock
        self.given = [c for c in claims if c.allocation is not None]
        self.pending = [c for c in claims if c.allocation is None]
        self.slots: list[Slot] = slots_of(self.pending)
        # What the search on a node depends on besides the node: the requests (request names too, since
        # constraints name them). Reasons name claims by marker, so pods asking the same share cached outcomes.
        self.signature = tuple(
            (s.claim_index, tuple((a.name, a.signature) for a in s.alternatives), s.claim.constraints)
            for s in self.slots
        )
        # Node name -> why not: a string (claim markers still in it) or a deferred (function, *args) rendered
        # only if the pod turns out unplaceable, so that scanning many full nodes builds no messages.
        self.reasons: dict[str, str | LazyReason] = {}
        self._alternative_index = {
            id(alternative): (slot_index, alt_index)
            for slot_index, slot in enumerate(self.slots)
            for alt_index, alternative in enumerate(slot.alternatives)
        }
        self.cache = search_cache(state)
        self.policy = choice.gpu_policy.for_pod(PodSearch(state, pod, self.cache, self._needs_several_devices()))
        self._static_ids, self._outcomes = self.cache.for_requests(self.signature, self.policy.cache_key)

    # ------------------------------------------------------------------------------------ driver

    def run(self) -> Placement | Unplaceable:
        problem = self._check_claims()
        if problem:
            return Unplaceable(self.pod, {}, problem)
        policy = self.policy
        epoch = policy.score_epoch()
        if epoch is not None and not self.pod.node_name and not self.given:
            chosen = self._best_kept(epoch)
            if chosen is not None:
                node, outline = chosen
                return self._placement(node, self._materialise(node, outline))
            # No node fits: the scan below says why, node by node.
        best: tuple[SortKey, Node, Outcome, int] | None = None
        feasible = 0
        for node in self._candidate_nodes():
            outcome = self._outcome(node)
            if outcome.reason is not None:
                self.reasons[node.name] = outcome.reason
                continue
            feasible += 1
            score, index = policy.node_score(node, outcome)
            if best is None or score > best[0]:
                best = (score, node, outcome, index)
            if policy.stop_early(score, feasible):
                break
        if best is None:
            return self._unplaceable()
        _, node, outcome, index = best
        return self._placement(node, self._materialise(node, outcome.solutions[index]))

    def _best_kept(self, epoch: object) -> tuple[Node, Outline] | None:
        """The node and set a full scan would choose, looking again only at the nodes changed since a pod of
        the same kind was last placed, and re-scoring all nodes only in a new score epoch
        (``GpuPolicy.score_epoch``); None when no node fits.

        A full scan keeps the first node, in node-policy order, among those with the highest score: here the
        highest score, then the least node-policy key among the nodes that have it.
        """
        state, pod, policy = self.state, self.pod, self.policy
        node_policy = self.choice.node_policy
        key = (
            self.signature,
            policy.cache_key,
            node_policy.name,
            static_signature(pod),
            pod.milli_cpu,
            pod.memory,
        )
        kept = self.cache.node_scores(key)
        changed: Iterable[str] | None = None if kept is None else state.changed_since(kept.mark)
        mark = state.change_mark()
        nodes = state.nodes
        if kept is None or changed is None:
            names, _ = state.static_filter(pod)
            kept = NodeScores(epoch, mark, frozenset(names), {}, {}, {})
            self.cache.keep_node_scores(key, kept)
            changed = names
            fresh = True
        else:
            fresh = False
            kept.mark = mark
        feasible, scores, indices, passing = kept.feasible, kept.scores, kept.indices, kept.passing
        # Which nodes can take the pod, and their outcomes: independent of the epoch, so only changed nodes are
        # looked at again. The hot loop of a full scan: names bound once, the outcome memo read inline.
        static_ids, outcomes, usage_id = self._static_ids, self._outcomes, state.node_usage_id
        load, cpu_free = state.load, state.cpu_free
        for name in changed:
            if not fresh:
                feasible.pop(name, None)
            node = nodes.get(name)
            if node is None or name not in passing or not resources_fit(node, load(name), pod):
                continue
            static_id = static_ids.get(name)
            outcome = None if static_id is None else outcomes.get((static_id, usage_id(node)))
            if outcome is None:
                outcome = self._outcome(node)
            if outcome.reason is None:
                feasible[name] = (outcome, cpu_free(node))
        # Scores: every feasible node's in a new epoch, else only the changed nodes'.
        if kept.epoch is not epoch:
            kept.epoch = epoch
            scores.clear()
            indices.clear()
            rescore: Iterable[str] = feasible
        else:
            if not fresh:
                for name in changed:
                    scores.pop(name, None)
                    indices.pop(name, None)
            rescore = [name for name in changed if name in feasible]
        # node_score depends on the node only through its outcome and free CPU: nodes alike (e.g. idle nodes of
        # one model) are scored once per pod.
        alike: dict[tuple[int, int | None], tuple[SortKey, int]] = {}
        node_score = policy.node_score
        for name in rescore:
            outcome, cpu = feasible[name]
            same = (id(outcome), cpu)
            result = alike.get(same)
            if result is None:
                result = alike[same] = node_score(nodes[name], outcome)
            scores[name], indices[name] = result
        if not scores:
            return None
        top = max(scores.values())
        tied = [name for name, score in scores.items() if score == top]
        name = tied[0] if len(tied) == 1 else min(tied, key=state.order_keys(node_policy).__getitem__)
        return nodes[name], feasible[name][0].solutions[indices[name]]

    def _check_claims(self) -> str | None:
        """Pod-wide problems: unknown classes and selectors that do not compile."""
        for slot in self.slots:
            for alternative in slot.alternatives:
                device_class = self.state.classes.get(alternative.class_name)
                if device_class is None:
                    where = f"{slot.claim.label}: {alternative.path}.deviceClassName"
                    return f"{where}: DeviceClass {alternative.class_name!r} not found"
                for expression, where in selector_sites(slot.claim, alternative, device_class):
                    try:
                        self.state.selectors.compile(expression, where)
                    except SelectorError as err:
                        return str(err)
        return None

    def _candidate_nodes(self) -> Iterator[Node]:
        """Nodes in node-policy order that pass the scheduler's own filters (pods, cpu, memory, bound claims).

        Lazy: a greedy policy stops at the first node that fits, so later nodes are never checked.
        """
        state = self.state
        pod = self.pod
        reasons = self.reasons
        if pod.node_name:
            names = [pod.node_name]  # bound already: only its claims are left to check
        else:
            names, static_reasons = state.static_filter(pod)
            reasons.update(static_reasons)
        nodes = state.nodes
        for name in state.in_policy_order(self.choice.node_policy, names):
            node = nodes.get(name)
            if node is None:
                reasons[name] = "node not found"
                continue
            if not pod.node_name:
                load = state.load(name)
                if not resources_fit(node, load, pod):
                    reasons[name] = (resource_rejection, node, load, pod)
                    continue
            if self.given:
                reason = self._given_claims_exclude(node)
                if reason is not None:
                    reasons[name] = reason
                    continue
            yield node

    def _render(self, reason: str | LazyReason) -> str:
        """The text of a reason, with this pod's claim names (cached reasons are shared by pods asking the same)."""
        if isinstance(reason, tuple):
            reason = reason[0](*reason[1:]) or ""
        if CLAIM_MARK not in reason:
            return reason
        return _CLAIM_MARKER.sub(lambda m: self.pending[int(m.group(1))].key, reason)

    def _given_claims_exclude(self, node: Node) -> str | None:
        for claim in self.given:
            selector = claim.allocation.node_selector if claim.allocation else None
            if selector is not None and not selector.matches(node):
                return f"claim {claim.key} is allocated on other nodes"
        return None

    def _cannot_possibly_fit(self, summary: NodeSummary) -> str | None:
        """Necessary conditions only (rounding can only raise amounts), so no fitting node is ever skipped."""
        for slot in self.slots:
            reason = None
            for alternative in slot.alternatives:
                if alternative.admin_access or alternative.allocation_mode == ALLOCATION_MODE_ALL:
                    reason = None
                    break
                reason = None
                if summary.free_devices < alternative.count:
                    reason = (
                        f"needs {alternative.count} free devices, {summary.free_devices} of {summary.devices} are free"
                    )
                else:
                    for key, amount in alternative.capacity_requests.items():
                        most, device_name = summary.max_free.get(key, (None, ""))
                        if most is None:
                            reason = f"capacity {key}: no free device has it"
                            break
                        if most < amount:
                            # Even the device with the most left is short: name it, like the search would.
                            needs, free = format_amount(key, amount), format_amount(key, max(0, most))
                            reason = f"{device_name}: capacity {key}: needs {needs}, {free} free"
                            break
                if reason is None:
                    break
            if reason is not None:
                return f"{reason} (claim {claim_marker(slot.claim_index)})"
        return None

    # --------------------------------------------------------------------------------- per node

    def _outcome(self, node: Node) -> Outcome:
        """The search's result on ``node``, shared by every node of the same shape (same static devices as far
        as these requests can tell, used alike). A pod without claims gets one empty set on every node; its
        shape still matters to the fragmentation score, which depends on the node's GPUs."""
        static_id = self._static_ids.get(node.name)
        if static_id is None:
            static_id = self._static_ids[node.name] = self._static_shape(node)
        shape = (static_id, self.state.node_usage_id(node))
        outcome = self._outcomes.get(shape)
        if outcome is None:
            outcome = self._outcomes[shape] = self._search(node)
        return outcome

    def _static_shape(self, node: Node) -> int:
        """An id equal for nodes whose devices (in ``devices_on`` order) these requests cannot tell apart.

        Per device: its name, capacities, sharing, listing rank and topology attributes, and for each
        alternative whether its selectors, taints and capacity rules admit the device and what one allocation
        of it would consume.
        """
        state = self.state
        devices = state.devices_on(node)
        order = tuple(sorted(range(len(devices)), key=lambda i: devices[i].order))
        fingerprint: list[Hashable] = [order]
        for device in devices:
            entry: list[object] = [
                device.name,
                tuple(sorted((k, c.value, c.policy) for k, c in device.capacity.items())),
                device.allow_multiple_allocations,
                tuple(topology_value(device, level) for level in TOPOLOGY_LEVELS),
            ]
            for slot in self.slots:
                for alternative in slot.alternatives:
                    entry.append(self._static_admission(slot, alternative, device))
            fingerprint.append(tuple(entry))
        return self.cache.shape_id(tuple(fingerprint))

    def _static_admission(self, slot: Slot, alternative: Any, device: Device) -> object:
        device_class = self.state.classes.get(alternative.class_name)
        if device_class is None:
            return "no class"
        for expression, where in selector_sites(slot.claim, alternative, device_class, _claim_label(slot)):
            try:
                if not self.state.selectors.matches(expression, device, where):
                    return False
            except SelectorError as err:
                return str(err)
        taint = first_untolerated(device.taints, alternative.tolerations)
        if taint is not None:
            return str(taint)
        amounts, reason = consumption(device, alternative.capacity_requests)
        return reason if reason else tuple(sorted(amounts.items())) if amounts else ()

    def _search(self, node: Node) -> Outcome:
        reason = self._cannot_possibly_fit(self.state.summary(node))
        if reason is not None:
            return Outcome(reason=reason)
        found = self._solve(node)
        if isinstance(found, str):
            return Outcome(reason=found)
        state = self.state
        devices = state.devices_on(node)
        position = {d.key: i for i, d in enumerate(devices)}
        kept: list[Solution] = found
        if len(found) > 1:  # sets with the same effect are scored once
            kept, seen = [], set()
            for solution in found:
                effect = self.policy.set_effect(state, solution)
                if effect not in seen:
                    seen.add(effect)
                    kept.append(solution)
        where = self._alternative_index
        outcome = Outcome(
            solutions=tuple(
                tuple((*where[id(p.request)], position[p.device.key], p.amounts) for p in solution) for solution in kept
            ),
            packing=tuple(round(packing_score(state, solution), 9) for solution in kept),
        )
        self.policy.describe(state, devices, kept, outcome)
        return outcome

    def _solve(self, node: Node) -> list[Solution] | str:
        """Candidate device sets on ``node`` in GPU-policy order, or why there is none."""
        state, policy = self.state, self.policy
        devices = state.devices_on(node)
        ordered = sorted(devices, key=lambda d: policy.device_order_key(d, state.utilisation(d)))
        candidates: dict[tuple[int, int], Candidates] = {}
        for slot_index, slot in enumerate(self.slots):
            for alt_index, alternative in enumerate(slot.alternatives):
                candidates[(slot_index, alt_index)] = candidates_for(
                    state, slot.claim, alternative, ordered, state.selectors, _claim_label(slot)
                )
        for slot_index, slot in enumerate(self.slots):
            if not any(enough(alt, candidates[(slot_index, a)]) for a, alt in enumerate(slot.alternatives)):
                return explain(self.slots, candidates, exhausted=False)
        solutions: list[Solution] = []
        exhausted = False
        for group in policy.device_groups(devices):
            search = NodeSearch(state, self.slots, candidates, group)
            solutions.extend(islice(search.solutions(), policy.solutions_per_group))
            exhausted |= search.exhausted
        if not solutions:
            return explain(self.slots, candidates, exhausted)
        return solutions

    def _materialise(self, node: Node, outline: Outline) -> Solution:
        devices = self.state.devices_on(node)
        return tuple(
            Pick(self.slots[slot].claim_index, self.slots[slot].alternatives[alt], devices[position], amounts)
            for slot, alt, position, amounts in outline
        )

    def _needs_several_devices(self) -> bool:
        total = 0
        for slot in self.slots:
            first = slot.alternatives[0]
            total += 2 if first.allocation_mode == ALLOCATION_MODE_ALL else first.count
        return total > 1

    # ------------------------------------------------------------------------------------ output

    def _unplaceable(self) -> Unplaceable:
        total = len(self.state.node_names) if not self.pod.node_name else 1
        reasons = {name: self._render(why) for name, why in self.reasons.items()}
        shown = [f"{name}: {why}" for name, why in sorted(reasons.items())[:MAX_REASONS_IN_MESSAGE]]
        more = len(reasons) - len(shown)
        message = f"0/{total} nodes can take pod {self.pod.key}: " + "; ".join(shown)
        if more > 0:
            message += f"; and {more} more nodes"
        return Unplaceable(self.pod, reasons, message)

    def _placement(self, node: Node, solution: Solution) -> Placement:
        timestamp = _rfc3339(self.clock())
        placements: list[ClaimPlacement] = []
        for claim_index, claim in enumerate(self.pending):
            picks = [p for p in solution if p.claim_index == claim_index]
            results, accounted = [], []
            for pick in picks:
                result: dict[str, Any] = {
                    "request": pick.request.name,
                    "driver": pick.device.key.driver,
                    "pool": pick.device.key.pool,
                    "device": pick.device.key.device,
                }
                if pick.request.admin_access:
                    result["adminAccess"] = True
                if pick.request.raw_tolerations:
                    result["tolerations"] = [copy.deepcopy(dict(t)) for t in pick.request.raw_tolerations]
                share_id = None
                if pick.amounts is not None:
                    share_id = self._share_id()
                    result["shareID"] = share_id
                    result["consumedCapacity"] = consumed_capacity_field(pick.amounts)
                results.append(result)
                accounted.append(
                    AllocatedDevice(
                        pick.request.name,
                        pick.device.key,
                        share_id,
                        dict(pick.amounts or {}),
                        pick.request.admin_access,
                    )
                )
            devices: dict[str, Any] = {"results": results}
            config = self._config(claim, picks)
            if config:
                devices["config"] = config
            allocation = {
                "devices": devices,
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node.name]}]}
                    ]
                },
                "allocationTimestamp": timestamp,
            }
            counted = [(p.request.name, p.device, p.amounts) for p in picks if not p.request.admin_access]
            # The pod's CPU goes with its first claim that takes devices: a pod is one task.
            cpu = self.pod.milli_cpu if counted and not any(c.task_kinds for c in placements) else 0
            kinds = task_kinds(counted, cpu)
            placements.append(ClaimPlacement(claim.key, claim.uid, allocation, tuple(accounted), tuple(kinds)))
        return Placement(self.pod, node.name, self.choice, tuple(placements))

    def _share_id(self) -> str:
        share_id = str(self.share_ids())
        if not _SHARE_ID.match(share_id):
            # The API server refuses anything but a lowercase RFC 4122 UUID
            # (docs/design/observed-1.36.md#what-the-api-server-accepts-in-an-allocation).
            raise ValueError(f"share ID {share_id!r} is not a lowercase RFC 4122 UUID")
        return share_id

    def _config(self, claim: Claim, picks: Sequence[Any]) -> list[dict[str, Any]]:
        """Class configs first (FromClass, with the requests using that class), then the claim's (FromClaim)."""
        chosen: dict[str, str] = {}  # request name as results name it -> class
        for pick in picks:
            chosen.setdefault(pick.request.name, pick.request.class_name)
        by_class: dict[str, list[str]] = {}
        for request_name, class_name in chosen.items():
            by_class.setdefault(class_name, []).append(request_name)
        config: list[dict[str, Any]] = []
        for class_name, request_names in by_class.items():
            for entry in self.state.classes[class_name].config:
                config.append({"source": "FromClass", "requests": list(request_names), **copy.deepcopy(dict(entry))})
        for own in claim.config:
            item: dict[str, Any] = {"source": "FromClaim"}
            if own.requests:
                item["requests"] = list(own.requests)
            item.update(copy.deepcopy(dict(own.configuration)))
            config.append(item)
        return config


def _claim_label(slot: Slot) -> str:
    return f"ResourceClaim {claim_marker(slot.claim_index)}"


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
