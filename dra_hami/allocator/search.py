"""Finding devices on one node for every pending request of a pod: candidate filtering and backtracking search."""

from __future__ import annotations

import functools
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .capacity import consumption, shortfall
from .cel import SelectorCache
from .errors import SelectorError
from .model import ALLOCATION_MODE_ALL, Claim, Device, DeviceClass, DeviceKey, ExactRequest
from .nodes import first_untolerated
from .state import ClusterState

DEFAULT_STEP_BUDGET = 20_000  # backtracking steps per node before giving up on it
MAX_REASONS_PER_REQUEST = 3
CLAIM_MARK = "\x00"  # claim_marker(i) stands for the i-th pending claim's name until a reason is shown


def claim_marker(claim_index: int) -> str:
    return f"{CLAIM_MARK}{claim_index}{CLAIM_MARK}"


EXHAUSTED = "gave up searching device combinations (step budget exhausted)"


@dataclass(frozen=True, slots=True)
class Pick:
    """One device chosen for one request (or subrequest) of one claim."""

    claim_index: int
    request: ExactRequest
    device: Device
    amounts: Mapping[str, int] | None  # what a shared allocation consumes; None for a dedicated device

    @property
    def shared(self) -> bool:
        return self.amounts is not None


Solution = tuple[Pick, ...]


@dataclass(slots=True)
class Candidates:
    """Devices that could serve one alternative on this node, before combining requests."""

    usable: list[tuple[Device, Mapping[str, int] | None]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    all_mode_broken: bool = False  # allocationMode All and some matching device cannot be had


@dataclass(frozen=True, slots=True)
class Slot:
    claim_index: int
    claim: Claim
    alternatives: tuple[ExactRequest, ...]


def slots_of(claims: Sequence[Claim]) -> list[Slot]:
    return [Slot(i, claim, request.alternatives) for i, claim in enumerate(claims) for request in claim.requests]


def selector_sites(
    claim: Claim, alternative: ExactRequest, device_class: DeviceClass, label: str | None = None
) -> list[tuple[str, str]]:
    """(expression, where) of every selector an alternative must satisfy: the class's, then its own.

    ``label`` names the claim in ``where`` instead of its own label (a claim marker, for reasons shared by pods).
    """
    sites = [
        (expr, f"DeviceClass {device_class.name}: spec.selectors[{i}].cel.expression")
        for i, expr in enumerate(device_class.selectors)
    ]
    sites += [
        (expr, f"{label or claim.label}: {alternative.path}.selectors[{i}].cel.expression")
        for i, expr in enumerate(alternative.selectors)
    ]
    return sites


def _short(expression: str) -> str:
    return expression if len(expression) <= 80 else expression[:77] + "..."


def candidates_for(
    state: ClusterState,
    claim: Claim,
    alternative: ExactRequest,
    devices: Sequence[Device],
    selectors: SelectorCache,
    label: str | None = None,
) -> Candidates:
    """Filter ``devices`` (already in policy order) by selectors, taints and static capacity, against current usage.

    ``label``: how selector errors name the claim (see ``selector_sites``).
    """
    out = Candidates()
    device_class = state.classes.get(alternative.class_name)
    if device_class is None:
        out.rejected.append(f"DeviceClass {alternative.class_name} not found")
        return out
    sites = selector_sites(claim, alternative, device_class, label)
    all_mode = alternative.allocation_mode == ALLOCATION_MODE_ALL
    for device in devices:
        reason = None
        for expression, where in sites:
            try:
                if not selectors.matches(expression, device, where):
                    reason = f"{device.name}: selector {_short(expression)!r} did not match"
            except SelectorError as err:
                reason = f"{device.name}: {err}"
            if reason:
                break
        if reason:
            out.rejected.append(reason)
            continue  # not matching is fine for All: it only takes the matching devices
        reason, amounts = _usable(state, device, alternative)
        if reason:
            out.rejected.append(reason)
            out.all_mode_broken |= all_mode
            continue
        out.usable.append((device, amounts))
    if all_mode and not out.usable:
        out.all_mode_broken = True
    return out


def _usable(
    state: ClusterState, device: Device, alternative: ExactRequest
) -> tuple[str | None, Mapping[str, int] | None]:
    taint = first_untolerated(device.taints, alternative.tolerations)
    if taint is not None:
        return f"{device.name}: taint {taint} not tolerated", None
    amounts, reason = consumption(device, alternative.capacity_requests)
    if amounts is None:  # exactly when there is a reason
        return f"{device.name}: {reason}", None
    if alternative.admin_access:
        return None, None  # admin access may use devices in use and consumes nothing
    usage = state.usage(device.key)
    if usage.exclusive:
        return f"{device.name}: allocated exclusively to another claim", None
    if not device.allow_multiple_allocations:
        if not usage.idle:
            return f"{device.name}: in use by another claim", None
        return None, None
    short = shortfall(device, amounts, usage.consumed, None)
    if short:
        return f"{device.name}: {short}", None
    return None, amounts


class NodeSearch:
    """Backtracking over slots (requests in claim order), alternatives in order, devices in policy order."""

    def __init__(
        self,
        state: ClusterState,
        slots: Sequence[Slot],
        candidates: Mapping[tuple[int, int], Candidates],
        allowed: Container[DeviceKey] | None = None,
        budget: int = DEFAULT_STEP_BUDGET,
    ) -> None:
        self.state = state
        self.slots = slots
        self.candidates = candidates
        self.allowed = allowed  # the devices this search may use (None: all)
        self.steps_left = budget
        self._picks: list[Pick] = []
        self._pending: dict[DeviceKey, dict[str, int]] = {}  # shared consumption in this allocation
        self._dedicated: set[DeviceKey] = set()  # devices this allocation holds exclusively
        self._match: dict[tuple[int, int], object] = {}  # (claim, constraint) -> value all devices share
        self._distinct: dict[tuple[int, int], list[object]] = {}

    @property
    def exhausted(self) -> bool:
        return self.steps_left <= 0

    def solutions(self) -> Iterator[Solution]:
        yield from self._place(0)

    def _place(self, slot_index: int) -> Iterator[Solution]:
        if slot_index == len(self.slots):
            yield tuple(self._picks)
            return
        slot = self.slots[slot_index]
        for alt_index, alternative in enumerate(slot.alternatives):
            cands = self.candidates[(slot_index, alt_index)]
            usable = cands.usable if self.allowed is None else [c for c in cands.usable if c[0].key in self.allowed]
            if alternative.allocation_mode == ALLOCATION_MODE_ALL:
                if cands.all_mode_broken or len(usable) != len(cands.usable):
                    continue
                yield from self._choose(slot_index, slot, alternative, usable, len(usable), 0)
            else:
                yield from self._choose(slot_index, slot, alternative, usable, alternative.count, 0)
            if self.exhausted:
                return

    def _choose(
        self,
        slot_index: int,
        slot: Slot,
        alternative: ExactRequest,
        usable: list[tuple[Device, Mapping[str, int] | None]],
        remaining: int,
        start: int,
    ) -> Iterator[Solution]:
        if remaining == 0:
            yield from self._place(slot_index + 1)
            return
        # Each device at most once per request: a request for two GPUs means two different GPUs.
        for position in range(start, len(usable) - remaining + 1):
            self.steps_left -= 1
            if self.steps_left <= 0:
                return
            device, amounts = usable[position]
            undo = self._take(slot.claim_index, slot.claim, alternative, device, amounts)
            if undo is None:
                continue
            self._picks.append(Pick(slot.claim_index, alternative, device, amounts))
            yield from self._choose(slot_index, slot, alternative, usable, remaining - 1, position + 1)
            self._picks.pop()
            undo()
            if self.exhausted:
                return

    def _take(
        self,
        claim_index: int,
        claim: Claim,
        alternative: ExactRequest,
        device: Device,
        amounts: Mapping[str, int] | None,
    ) -> Callable[[], None] | None:
        """Reserve ``device`` for the alternative if capacity and constraints allow; returns how to undo it."""
        key = device.key
        if not alternative.admin_access:
            if key in self._dedicated:
                return None
            if amounts is None:
                if key in self._pending:
                    return None
            elif shortfall(device, amounts, self.state.usage(key).consumed, self._pending.get(key)) is not None:
                return None
        undo_constraints = self._constrain(claim_index, claim, alternative.name, device)
        if undo_constraints is None:
            return None
        if alternative.admin_access:
            return undo_constraints
        if amounts is None:
            self._dedicated.add(key)

            def undo_dedicated() -> None:
                self._dedicated.discard(key)
                undo_constraints()

            return undo_dedicated
        pending = self._pending.setdefault(key, {})
        for k, v in amounts.items():
            pending[k] = pending.get(k, 0) + v

        def undo_shared() -> None:
            for k, v in amounts.items():
                pending[k] -= v
            if not any(pending.values()):
                self._pending.pop(key, None)
            undo_constraints()

        return undo_shared

    def _constrain(
        self, claim_index: int, claim: Claim, request_name: str, device: Device
    ) -> Callable[[], None] | None:
        undos: list[Callable[[], object]] = []
        for c_index, constraint in enumerate(claim.constraints):
            if not constraint.applies_to(request_name):
                continue
            slot = (claim_index, c_index)
            name = constraint.match_attribute or constraint.distinct_attribute
            value = device.attributes.get(name)  # type: ignore[arg-type]
            if value is None:
                ok = False
            elif constraint.match_attribute:
                current = self._match.get(slot)
                ok = current is None or (type(current) is type(value) and current == value)
                if ok and current is None:
                    self._match[slot] = value
                    undos.append(functools.partial(self._match.pop, slot, None))
            else:
                seen = self._distinct.setdefault(slot, [])
                ok = not any(type(v) is type(value) and v == value for v in seen)
                if ok:
                    seen.append(value)
                    undos.append(seen.pop)
            if not ok:
                for undo in reversed(undos):
                    undo()
                return None

        def undo_all() -> None:
            for undo in reversed(undos):
                undo()

        return undo_all


def enough(alternative: ExactRequest, cands: Candidates) -> bool:
    """Whether there are at least as many usable devices as the alternative needs (a search may still fail)."""
    if alternative.allocation_mode == ALLOCATION_MODE_ALL:
        return bool(cands.usable) and not cands.all_mode_broken
    return len(cands.usable) >= alternative.count


def explain(slots: Sequence[Slot], candidates: Mapping[tuple[int, int], Candidates], exhausted: bool) -> str:
    """Why no solution was found on a node, naming what ran out."""
    parts = []
    for slot_index, slot in enumerate(slots):
        per_alt = [candidates[(slot_index, a)] for a in range(len(slot.alternatives))]
        if any(enough(alt, c) for alt, c in zip(slot.alternatives, per_alt, strict=True)):
            continue
        for alternative, cands in zip(slot.alternatives, per_alt, strict=True):
            reasons = cands.rejected[:MAX_REASONS_PER_REQUEST]
            more = len(cands.rejected) - len(reasons)
            text = "; ".join(reasons) if reasons else "no devices on this node"
            if more > 0:
                text += f"; and {more} more"
            if cands.usable and alternative.allocation_mode != ALLOCATION_MODE_ALL:
                text = f"needs {alternative.count} devices, {len(cands.usable)} usable: {text}"
            parts.append(f"{text} (claim {claim_marker(slot.claim_index)}, request {alternative.name})")
    if parts:
        return "; ".join(parts)
    if exhausted:
        return EXHAUSTED
    return "no combination of devices satisfies all requests together (constraints or combined capacity)"
