"""CEL selectors in the Kubernetes device environment."""

import pytest
from allocator_factories import DRIVER, gpu, resource_slice

from dra_hami.allocator import SelectorCache, SelectorError, parse_slices
from dra_hami.wire import device_class_selector


@pytest.fixture
def device():
    raw = gpu(
        "hami-gpu-0",
        "16Gi",
        attributes={
            "minor": {"int": 0},
            "driverVersion": {"version": "550.54.15"},
            "resource.kubernetes.io/pcieRoot": {"string": "pci0000:00"},
            "example.com/rack": {"string": "r1"},
        },
    )
    return parse_slices([resource_slice("n", [raw])])[0]


@pytest.fixture
def cache():
    return SelectorCache()


D = f"device.attributes['{DRIVER}']"
C = f"device.capacity['{DRIVER}']"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (device_class_selector(DRIVER), True),
        (f"device.driver == '{DRIVER}'", True),
        (f"{D}.productName == 'Tesla-T4' && {D}.minor == 0", True),
        (f"{D}.minor > 0", False),
        ("device.attributes['resource.kubernetes.io'].pcieRoot == 'pci0000:00'", True),
        ("device.attributes['example.com'].rack == 'r1'", True),
        ("device.allowMultipleAllocations", True),
        (f"{C}.memory.compareTo(quantity('16Gi')) == 0", True),
        (f"{C}.memory.isGreaterThan(quantity('8Gi'))", True),
        (f"{C}.memory.isLessThan(quantity('8Gi'))", False),
        (f"{C}.memory.asInteger() == 17179869184", True),
        (f"{C}.cores.compareTo(quantity('100')) == 0", True),
        (f"{D}.driverVersion.isGreaterThan(semver('535.0.0'))", True),
        (f"{D}.driverVersion.isLessThan(semver('535.0.0'))", False),
        (f"{D}.driverVersion.compareTo(semver('550.54.15')) == 0", True),
        (
            f"{D}.driverVersion.major() == 550 && {D}.driverVersion.minor() == 54 && {D}.driverVersion.patch() == 15",
            True,
        ),
        ("has(device.attributes['nowhere.io'].x)", False),  # unknown domain: an empty map
        (f"has({D}.minor)", True),
    ],
)
def test_expressions(cache, device, expression, expected):
    assert cache.matches(expression, device, "test") is expected


def test_unknown_key_is_a_runtime_error_naming_device_and_field(cache, device):
    with pytest.raises(SelectorError) as err:
        cache.matches(f"{D}.nosuch == 1", device, "DeviceClass gpu: spec.selectors[0].cel.expression")
    message = str(err.value)
    assert message.startswith("DeviceClass gpu: spec.selectors[0].cel.expression: device hami-gpu-0 (pool n):")
    assert "nosuch" in message


def test_unknown_domain_then_key_is_a_runtime_error(cache, device):
    with pytest.raises(SelectorError, match="no such member"):
        cache.matches("device.attributes['nowhere.io'].x == 'y'", device, "w")


def test_compile_error(cache, device):
    with pytest.raises(SelectorError, match=r"^w: compile error: syntax error at column \d+ in"):
        cache.matches("device.driver ==", device, "w")


def test_bad_quantity_and_semver_literals(cache, device):
    with pytest.raises(SelectorError, match="not a valid quantity"):
        cache.matches(f"{C}.memory.isGreaterThan(quantity('lots'))", device, "w")
    with pytest.raises(SelectorError, match="semantic version"):
        cache.matches(f"{D}.driverVersion.isGreaterThan(semver('7.5'))", device, "w")


def test_non_boolean_result_is_an_error(cache, device):
    with pytest.raises(SelectorError, match="must evaluate to bool"):
        cache.matches("device.driver", device, "w")


def test_results_are_cached_per_expression_and_device(cache, device):
    for _ in range(3):
        assert cache.matches("device.allowMultipleAllocations", device, "w")
    with pytest.raises(SelectorError):
        cache.matches(f"{D}.nosuch", device, "w")
    with pytest.raises(SelectorError):
        cache.matches(f"{D}.nosuch", device, "w")
    assert cache.evaluations == 2
