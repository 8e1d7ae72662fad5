"""Placing all of a pod's claims on one node by policy, and writing the claims' ``status.allocation``."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from .capacity import consumed_capacity_field, format_amount
from .errors import SelectorError
from .fragmentation import DemandSnapshot, FragmentationScorer, TaskKind
from .model import ALLOCATION_MODE_ALL, AllocatedDevice, Claim, Device, parse_claim
from .nodes import Node, Pod, parse_pod, resource_rejection
from .policies import (
    FRAGMENTATION,
    PERFECT_TOPOLOGY,
    TOPOLOGY,
    TOPOLOGY_LEVELS,
    PolicyChoice,
    device_order_key,
    fragmentation_increase,
    packing_score,
    policy_for,
    topology_groups,
    topology_score,
    topology_value,
)
from .search import (
    CLAIM_MARK,
    EXHAUSTED,
    Candidates,
    NodeSearch,
    Slot,
    Solution,
    candidates_for,
    claim_marker,
    enough,
    explain,
    selector_sites,
    slots_of,
)
from .state import ClusterState, NodeSummary, task_kinds

FRAGMENTATION_SOLUTIONS_PER_NODE = 8
# Set-scoring policies compare the first this many feasible nodes, in node-policy order: bounded work per pod.
MAX_SCORED_NODES = 32  # device sets compared per node by the fragmentation policy
WHOLE_GPU_PRIOR = DemandSnapshot(((TaskKind(1, 1.0, 0), 1.0),), 0)  # before anything was observed
_SHARE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_REASONS_IN_MESSAGE = 5
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
        # Whether a node can serve the pending claims depends on nothing else: the key of the refusal cache.
        # Claims with their own selectors are keyed by name too: selector errors name the claim.
        self.signature = tuple(
            (
                s.claim_index,
                tuple(a.signature for a in s.alternatives),
                s.claim.constraints,
                s.claim.key if any(a.selectors for a in s.alternatives) else "",
            )
            for s in self.slots
        )
        self.reasons: dict[str, str] = {}
        # Topology only matters when a pod takes several devices; otherwise it packs like binpack.
        self.greedy = not choice.scores_device_sets or (choice.gpu == TOPOLOGY and not self._needs_several_devices())
        self._scorer: FragmentationScorer | None = None
        self._seen_shapes: set[tuple] = set()  # node shapes already scored for this pod

    # ------------------------------------------------------------------------------------ driver

    def run(self) -> Placement | Unplaceable:
        problem = self._check_claims()
        if problem:
            return Unplaceable(self.pod, {}, problem)
        best: tuple[Node, Solution, tuple] | None = None
        feasible = 0
        for node in self._candidate_nodes():
            outcome = self._solve(node)
            if outcome is None:
                feasible += 1  # same shape as a node scored earlier: it would score the same and lose the tie
                if feasible >= MAX_SCORED_NODES:
                    break
                continue
            if isinstance(outcome, str):
                self.reasons[node.name] = self._render(outcome)
                if outcome != EXHAUSTED:
                    self._remember_refusal(node.name, outcome)
                continue
            solution, score = outcome
            feasible += 1
            if best is None or score > best[2]:
                best = (node, solution, score)
            if self.greedy:
                break  # nodes come in policy order: the first that fits is the choice
            if self.choice.gpu == TOPOLOGY and score[: len(PERFECT_TOPOLOGY)] == PERFECT_TOPOLOGY:
                break  # nothing can beat a fully aligned set on an earlier node
            if feasible >= MAX_SCORED_NODES:
                break
        if best is None:
            return self._unplaceable()
        node, solution, _ = best
        return self._placement(node, solution)

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
        """Nodes in node-policy order that pass the scheduler's own filters and the cheap capacity bounds.

        Lazy: a greedy policy stops at the first node that fits, so later nodes are never checked.
        """
        state = self.state
        if self.pod.node_name:
            names = [self.pod.node_name]  # bound already: only its claims are left to check
        else:
            names, static_reasons = state.static_filter(self.pod)
            self.reasons.update(static_reasons)
        for name in state.in_policy_order(self.choice.node, names):
            node = state.nodes.get(name)
            if node is None:
                self.reasons[name] = "node not found"
                continue
            reason = None if self.pod.node_name else resource_rejection(node, state.load(name), self.pod)
            if reason is None and self.given:
                reason = self._given_claims_exclude(node)
            if reason is None:
                refused = state.refusals.get((name, self.signature))
                if refused is not None and refused[0] == state.node_version(name):
                    reason = refused[1]
                else:
                    reason = self._cannot_possibly_fit(state.summary(node))
                    if reason is not None:
                        self._remember_refusal(name, reason)
            if reason is not None:
                self.reasons[name] = self._render(reason)
                continue
            yield node

    def _render(self, reason: str) -> str:
        """Put this pod's claim names into a reason (cached reasons are shared by pods asking the same)."""
        if CLAIM_MARK not in reason:
            return reason
        return _CLAIM_MARKER.sub(lambda m: self.pending[int(m.group(1))].key, reason)

    def _remember_refusal(self, node_name: str, reason: str) -> None:
        self.state.refusals[(node_name, self.signature)] = (self.state.node_version(node_name), reason)

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

    def _solve(self, node: Node) -> tuple[Solution, tuple] | str | None:
        devices = self.state.devices_on(node)
        if not self.slots:
            return (), ()
        ordered = sorted(devices, key=lambda d: device_order_key(self.choice.gpu, d, self.state.utilisation(d)))
        candidates: dict[tuple[int, int], Candidates] = {}
        for slot_index, slot in enumerate(self.slots):
            for alt_index, alternative in enumerate(slot.alternatives):
                candidates[(slot_index, alt_index)] = candidates_for(
                    self.state, slot.claim, alternative, ordered, self.state.selectors
                )
        for slot_index, slot in enumerate(self.slots):
            if not any(enough(alt, candidates[(slot_index, a)]) for a, alt in enumerate(slot.alternatives)):
                return explain(self.slots, candidates, exhausted=False)

        if not self.greedy:
            shape = self._shape(ordered, candidates)
            if shape in self._seen_shapes:
                return None
            self._seen_shapes.add(shape)

        restrictions: list[Callable[[Device], bool] | None] = [None]
        if self.choice.gpu == TOPOLOGY and self._needs_several_devices():
            restrictions = [lambda d, g=group: d.key in g for group in topology_groups(devices)] + [None]
        per_search = FRAGMENTATION_SOLUTIONS_PER_NODE if self.choice.gpu == FRAGMENTATION else 1
        solutions: list[Solution] = []
        exhausted = False
        for allowed in restrictions:
            search = NodeSearch(self.state, self.slots, candidates, allowed)
            solutions.extend(islice(search.solutions(), per_search))
            exhausted |= search.exhausted
        if not solutions:
            return explain(self.slots, candidates, exhausted)
        if self.greedy:
            return solutions[0], ()
        before = None
        if self.choice.gpu == FRAGMENTATION:
            scorer = self._fragmentation_scorer()
            before = [scorer.profile(self.state.gpu_state(d)) for d in devices]
        scored = [(self._score(devices, s, before), i, s) for i, s in enumerate(solutions)]
        best = max(scored, key=lambda item: (item[0], -item[1]))
        return best[2], best[0]

    def _shape(self, ordered: Sequence[Device], candidates: Mapping[tuple[int, int], Candidates]) -> tuple:
        """What a set-scoring policy's result on a node depends on: device states, eligibility and topology."""
        usable = [{d.key for d, _ in c.usable} for c in candidates.values()]
        shape = []
        for device in ordered:
            entry: tuple = (self.state.gpu_state(device), tuple(device.key in u for u in usable))
            if self.choice.gpu == TOPOLOGY:
                entry += tuple(topology_value(device, level) for level in TOPOLOGY_LEVELS)
            shape.append(entry)
        return tuple(shape)

    def _needs_several_devices(self) -> bool:
        total = 0
        for slot in self.slots:
            first = slot.alternatives[0]
            total += 2 if first.allocation_mode == ALLOCATION_MODE_ALL else first.count
        return total > 1

    def _score(self, devices: Sequence[Device], solution: Solution, before: list | None) -> tuple:
        packing = round(packing_score(self.state, solution), 9)
        if self.choice.gpu == TOPOLOGY:
            return (*topology_score(solution), packing)
        increase = fragmentation_increase(self.state, self._fragmentation_scorer(), devices, solution, before)
        return (-round(increase, 9), packing)

    def _fragmentation_scorer(self) -> FragmentationScorer:
        if self._scorer is None:
            snapshot = self.state.demand.snapshot()
            self._scorer = self.state.fragmentation_scorer(snapshot if snapshot.kinds else WHOLE_GPU_PRIOR)
        return self._scorer

    # ------------------------------------------------------------------------------------ output

    def _unplaceable(self) -> Unplaceable:
        total = len(self.state.node_names) if not self.pod.node_name else 1
        shown = [f"{name}: {why}" for name, why in sorted(self.reasons.items())[:MAX_REASONS_IN_MESSAGE]]
        more = len(self.reasons) - len(shown)
        message = f"0/{total} nodes can take pod {self.pod.key}: " + "; ".join(shown)
        if more > 0:
            message += f"; and {more} more nodes"
        return Unplaceable(self.pod, dict(self.reasons), message)

    def _placement(self, node: Node, solution: Solution) -> Placement:
        timestamp = _rfc3339(self.clock())
        placements = []
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
            kinds = task_kinds((p.request.name, p.device, p.amounts) for p in picks if not p.request.admin_access)
            placements.append(ClaimPlacement(claim.key, claim.uid, allocation, tuple(accounted), tuple(kinds)))
        return Placement(self.pod, node.name, self.choice, tuple(placements))

    def _share_id(self) -> str:
        share_id = str(self.share_ids())
        if not _SHARE_ID.match(share_id):
            # The API server refuses anything but a lowercase RFC 4122 UUID (k8s136_observed.md, E5).
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
        for entry in claim.config:
            item: dict[str, Any] = {"source": "FromClaim"}
            if entry.requests:
                item["requests"] = list(entry.requests)
            item.update(copy.deepcopy(dict(entry.configuration)))
            config.append(item)
        return config


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
