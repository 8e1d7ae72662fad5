"""Trace loading: the openb CSV layout, our YAML format, and errors naming file, line and column."""

from __future__ import annotations

import pytest

from dra_hami.simulate.trace import GPU_MEMORY_MIB, TraceError, load_nodes, load_pods

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn1,96000,393216,8,G2\nn2,8000,32768,0,\n"
PODS = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
    "p0,12000,16384,1,1000,,LS,Running,0,12537496,0\n"
    "p1,6000,12288,1,460,V100M16|V100M32,LS,Running,427061,12902960,427061\n"
    "p2,4000,8192,0,0,,BE,Pending,5,6,\n"
    "p3,8000,8192,8,1000,,LS,Running,5,6,7\n"
)


def test_nodes_csv() -> None:
    nodes = load_nodes("nodes.csv", NODES)
    assert [(n.name, n.cpu_milli, n.memory_mib, n.gpus, n.model) for n in nodes] == [
        ("n1", 96000, 393216, 8, "G2"),
        ("n2", 8000, 32768, 0, ""),
    ]
    assert nodes[0].gpu_memory_mib == GPU_MEMORY_MIB["G2"]
    assert nodes[1].gpu_memory_mib == 0


def test_every_model_memory_is_a_multiple_of_1000_mib() -> None:
    # 1 GPU-milli is then exactly memory/1000 MiB: no rounding in the fraction mapping.
    assert all(v % 1000 == 0 for v in GPU_MEMORY_MIB.values())


def test_gpu_memory_column_overrides_the_model_table() -> None:
    nodes = load_nodes("n.csv", "sn,cpu_milli,memory_mib,gpu,model,gpu_memory_mib\nx,1000,1000,1,H100,80000\n")
    assert nodes[0].gpu_memory_mib == 80000


def test_pods_csv_with_and_without_optional_columns() -> None:
    pods = load_pods("pods.csv", PODS)
    assert [(p.name, p.num_gpu, p.gpu_milli, p.gpu_spec, p.total_gpu_milli) for p in pods] == [
        ("p0", 1, 1000, (), 1000),
        ("p1", 1, 460, ("V100M16", "V100M32"), 460),
        ("p2", 0, 0, (), 0),
        ("p3", 8, 1000, (), 8000),
    ]
    short = load_pods("multigpu.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,10,2,1000\n")
    assert short[0].gpu_spec == () and short[0].total_gpu_milli == 2000


def test_yaml_format_both_lists_in_one_file() -> None:
    text = (
        "nodes:\n"
        "  - {name: n1, cpu_milli: 96000, memory_mib: 393216, gpu: 8, model: G2}\n"
        "pods:\n"
        "  - {name: p1, cpu_milli: 4000, memory_mib: 8192, num_gpu: 1, gpu_milli: 500}\n"
        "  - {name: p2, cpu_milli: 2000, memory_mib: 4096}\n"
    )
    assert load_nodes("t.yaml", text)[0].gpus == 8
    pods = load_pods("t.yaml", text)
    assert [(p.name, p.num_gpu, p.gpu_milli) for p in pods] == [("p1", 1, 500), ("p2", 0, 0)]


H = "sn,cpu_milli,memory_mib,gpu,model\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sn,cpu_milli,memory_mib,gpu\nn1,1,1,1\n", "nodes.csv:1: missing column(s) model"),
        (
            "sn,cpu_milli,memory_mib,gpu,model\nn1,lots,1,1,T4\n",
            "nodes.csv:2: column 2 (cpu_milli): 'lots' is not an integer",
        ),
        ("sn,cpu_milli,memory_mib,gpu,model\nn1,1,1,-1,T4\n", "nodes.csv:2: column 4 (gpu): -1 is out of range"),
        (
            "sn,cpu_milli,memory_mib,gpu,model\nn1,1,1,2,\n",
            "nodes.csv:2: column 5 (model): is empty but the node has 2 GPU(s)",
        ),
        (
            "sn,cpu_milli,memory_mib,gpu,model\nn1,1,1,2,H100\n",
            "nodes.csv:2: column 5 (model): unknown GPU model 'H100'",
        ),
        (
            "sn,cpu_milli,memory_mib,gpu,model\nn1,1,1,1,T4\nn1,1,1,1,T4\n",
            "nodes.csv:3: column 1 (sn): node 'n1' is listed twice",
        ),
        (
            "sn,cpu_milli,memory_mib,gpu,model\nN_1,1,1,1,T4\n",
            "nodes.csv:2: column 1 (sn): 'N_1' is not a valid node name",
        ),
        ("sn,cpu_milli,memory_mib,gpu,model\n", "nodes.csv: no nodes"),
        ("", "nodes.csv:1: empty file"),
    ],
)
def test_node_errors(text: str, message: str) -> None:
    with pytest.raises(TraceError) as err:
        load_nodes("nodes.csv", text)
    assert message in str(err.value)


HEAD = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("p,1000,10,1,0,", "pods.csv:2: column 5 (gpu_milli): 0 is out of range (must be between 1 and 1000)"),
        ("p,1000,10,1,1001,", "column 5 (gpu_milli): 1001 is out of range"),
        ("p,1000,10,2,500,", "column 5 (gpu_milli): 500 is out of range (must be between 1000 and 1000)"),
        ("p,1000,10,0,300,", "column 5 (gpu_milli): 300 is out of range"),
        ("p,1000,10,1,,", "column 5 (gpu_milli): is empty"),
        ("p,1.5,10,1,100,", "column 2 (cpu_milli): '1.5' is not an integer"),
        ("p,1000,10,1,100,V100|", "column 6 (gpu_spec): 'V100|' is not a |-separated list"),
        (",1000,10,1,100,", "column 1 (name): is empty"),
    ],
)
def test_pod_errors(row: str, message: str) -> None:
    with pytest.raises(TraceError) as err:
        load_pods("pods.csv", HEAD + row + "\n")
    assert message in str(err.value)


def test_yaml_errors_name_the_line_and_field() -> None:
    text = "pods:\n  - {name: a, cpu_milli: 1, memory_mib: 1}\n  - {name: b, cpu_milli: x, memory_mib: 1}\n"
    with pytest.raises(TraceError, match=r"^t\.yaml:3: field 'cpu_milli': 'x' is not an integer"):
        load_pods("t.yaml", text)
    with pytest.raises(TraceError, match=r"t\.yaml:1: expected a mapping with a 'nodes' list"):
        load_nodes("t.yaml", text)
    with pytest.raises(TraceError, match=r"t\.yml:\d+: not valid YAML"):
        load_pods("t.yml", "pods: [\n")


def test_unreadable_file(tmp_path) -> None:
    with pytest.raises(TraceError, match=r"missing\.csv: cannot read"):
        load_pods(tmp_path / "missing.csv")
