"""The package's import structure: no import circle (lazy imports inside functions included),
and no module importing from a higher floor. Floors, lowest first:

0 errors, options                    declarations
1 geometry                           cameras, poses, pixels
2 features, datasets and the small helpers they and the stages share
3 the stages: matching, pnp, refine, verification, reference_map
4 localizer (+ its option table), map_builder
5 runtime, service, evaluation, training
6 ros (the only floor that imports rclpy)
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ros2_s2dhm"
FLOORS = {
    0: ["errors", "options"],
    1: ["geometry"],
    2: ["features", "datasets", "feature_sampling", "point_selection", "compact_descriptors",
        "retrieval", "drive_map", "latency_budget", "drawing"],
    3: ["matching", "pnp", "refine", "verification", "reference_map"],
    4: ["localizer", "localizer_options", "map_builder"],
    5: ["runtime", "service", "evaluation", "training"],
    6: ["ros"],
}
FLOOR = {name: floor for floor, names in FLOORS.items() for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in the file)."""
    modules = _modules()

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # `from pkg import module` imports the module
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in modules else resolve(target))
            elif isinstance(node, ast.Import):
                deps.update(resolve(alias.name) for alias in node.names)
        graph[name] = {d for d in deps if d and d != name and d.startswith("ros2_s2dhm.")}
    return graph


def _floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOOR.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_floor():
    missing = sorted(m for m in import_graph() if m != "ros2_s2dhm" and _floor(m) is None)
    assert not missing, f"modules without a floor in test_layers.FLOORS: {missing}"


def test_no_import_from_a_higher_floor():
    wrong = [f"{m} (floor {_floor(m)}) imports {d} (floor {_floor(d)})"
             for m, deps in import_graph().items() for d in deps
             if _floor(m) is not None and _floor(d) is not None and _floor(d) > _floor(m)]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    graph = {m: {d for d in deps if not m.startswith(d + ".")}  # a package's own __init__
             for m, deps in import_graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_the_checks_see_a_circle(tmp_path, monkeypatch):
    """The circle detector is not blind: options importing localizer (the old circle) is one."""
    graph = import_graph()
    graph["ros2_s2dhm.options"] = graph["ros2_s2dhm.options"] | {"ros2_s2dhm.localizer"}
    monkeypatch.setattr(__import__(__name__), "import_graph", lambda: graph)
    try:
        test_no_import_circle()
    except AssertionError as exc:
        assert "ros2_s2dhm.options" in str(exc)
    else:
        raise AssertionError("a circle through options went unnoticed")
