"""The house rules of ``rollingdepth/``, checked on the source: function size and parameter
count limits, no import cycle between its modules, and imports only down the layers
(``docs/architecture.md``). Imports inside functions and those only for type checkers count
too: a dependency is one of the design however it is imported."""

import ast
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rollingdepth"
MAX_BODY_LINES = 80
MAX_PARAMS = 8
# The layers, top down: a module imports only from its own layer and those below it.
LAYERS = ("frontends", "evaluation", "runtime", "method", "io")
# Modules of every layer's use, below them all: they import nothing of the package's layers.
BASE = {"rollingdepth.errors", "rollingdepth.option_spec", "rollingdepth._version"}
# Above every layer: the package's lazy exports, ``python -m rollingdepth`` and the
# ``rollingdepth.coalign`` import path. Unchecked.
ENTRY = {"rollingdepth", "rollingdepth.__main__", "rollingdepth.coalign"}
# Typer builds a command's options from its function's parameters, and the pipeline's public
# __call__ takes the method's settings as keywords (diffusers' style).
PARAM_EXEMPT = {("frontends/run_video.py", "run_video"), ("frontends/eval_depth.py", "eval_depth"),
                ("frontends/app.py", "main"), ("runtime/pipeline.py", "__call__")}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def functions(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def param_count(node) -> int:
    a = node.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return len([n for n in names if n not in ("self", "cls")])


def test_no_function_body_over_80_lines():
    long = []
    for name, tree in modules().items():
        for node in functions(tree):
            lines = node.end_lineno - node.body[0].lineno + 1
            if lines > MAX_BODY_LINES:
                long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def test_no_function_over_8_parameters():
    many = []
    for name, tree in modules().items():
        path = name.removeprefix("rollingdepth.").replace(".", "/") + ".py"
        for node in functions(tree):
            if param_count(node) > MAX_PARAMS and (path, node.name) not in PARAM_EXEMPT:
                many.append(f"{name}.{node.name}: {param_count(node)} parameters")
    assert not many, many


def imports_of(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (anywhere in the file)."""
    found: set[str] = set()
    package = name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                break
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    trees = modules()
    graph = {name: imports_of(name, tree, set(trees)) for name, tree in trees.items()}
    assert graph["rollingdepth.method.pipeline"], "the checker found no imports: it is broken"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def layer_of(module: str) -> int:
    """The rank of ``module``'s layer: 0 for the top (front ends), ``len(LAYERS)`` for :data:`BASE`."""
    if module in BASE:
        return len(LAYERS)
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        raise AssertionError(f"{module}: in no layer; add it to LAYERS, BASE or ENTRY (tests/test_layout.py)")
    return LAYERS.index(parts[1])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a layer above its own, as ``importer -> imported``."""
    return [f"{name} -> {target}" for name in sorted(graph) if name not in ENTRY
            for target in sorted(graph[name]) if target not in ENTRY and layer_of(target) < layer_of(name)]


def test_imports_go_only_down_the_layers():
    """Front ends -> evaluation -> runtime -> method -> io (-> errors, option_spec): no module
    imports from a layer above its own, not even inside a function or for type checkers only.
    So method and io import neither runtime nor front ends, runtime imports no front end and
    no evaluation, evaluation no front end."""
    trees = modules()
    graph = {name: imports_of(name, tree, set(trees)) for name, tree in trees.items()}
    assert "rollingdepth.runtime.passes" in graph["rollingdepth.runtime.pipeline"], "the checker is broken"
    assert not upward_imports(graph), upward_imports(graph)


def test_the_layer_check_finds_upward_imports():
    graph = {"rollingdepth.method.pipeline": {"rollingdepth.runtime.passes", "rollingdepth.io.video_io"},
             "rollingdepth.runtime.passes": {"rollingdepth.method.coalign", "rollingdepth.errors"},
             "rollingdepth.errors": {"rollingdepth.io.video_io"}, "rollingdepth.io.video_io": set(),
             "rollingdepth.method.coalign": set()}
    assert upward_imports(graph) == ["rollingdepth.errors -> rollingdepth.io.video_io",
                                     "rollingdepth.method.pipeline -> rollingdepth.runtime.passes"]


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def command_modules() -> set[str]:
    """The modules of the commands: those ``[project.scripts]`` in pyproject.toml points at."""
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    return {target.split(":")[0] for target in project["project"]["scripts"].values()}


def imported_commands(graph: dict[str, set[str]], commands: set[str]) -> list[str]:
    """Every import of a command module by another, as ``importer -> imported``."""
    return [f"{name} -> {target}" for name in sorted(commands) for target in sorted(graph.get(name, ()))
            if target in commands]


def test_no_command_imports_another():
    """What the commands share (exit codes, the reporter, run_app, spelling, the original's command
    line) lives in shared front-end modules (``frontends.command``, ``frontends.original_cli``, ...);
    a command module (run_video, eval_depth, stereo_video, app) imports none of the others."""
    trees = modules()
    graph = {name: imports_of(name, tree, set(trees)) for name, tree in trees.items()}
    commands = command_modules()
    assert {"rollingdepth.frontends.run_video", "rollingdepth.frontends.app"} <= commands <= set(graph), commands
    assert not imported_commands(graph, commands), imported_commands(graph, commands)


def test_the_command_check_finds_a_command_importing_another():
    graph = {"pkg.a": {"pkg.b", "pkg.shared"}, "pkg.b": {"pkg.shared"}, "pkg.shared": set()}
    assert imported_commands(graph, {"pkg.a", "pkg.b"}) == ["pkg.a -> pkg.b"]


# ----------------------------------------------------------------------------- tests named after what they test
TESTS = Path(__file__).resolve().parent


def misnamed_tests(tests: Path = TESTS, package: Path = PACKAGE) -> list[str]:
    """The test files ``test_X.py`` that are named after no module of the package (``X.py``) and whose
    docstring names none of the package's files or folders either (a suite over several modules)."""
    stems = {p.stem for p in package.rglob("*.py")}
    bad = []
    for path in sorted(tests.glob("test_*.py")):
        if path.stem.removeprefix("test_") in stems:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        named = [word.strip("`.,;:()'\"") for word in doc.replace("(", " ").split() if word.startswith(
            ("rollingdepth/", "``rollingdepth/", "`rollingdepth/"))]
        if not any((package.parent / word.strip("`")).exists() for word in named):
            bad.append(path.name)
    return bad


def test_each_test_file_is_named_after_the_module_it_tests():
    """``tests/test_X.py`` tests ``X.py`` of the package; a suite over several modules names them in its docstring."""
    assert not misnamed_tests()


def test_the_test_name_check_finds_a_misnamed_test(tmp_path):
    (tmp_path / "test_driver.py").write_text('"""The passes."""\n')
    (tmp_path / "test_passes.py").write_text("")
    (tmp_path / "test_whole_runs.py").write_text('"""Runs (rollingdepth/runtime/passes.py, video_job.py)."""\n')
    assert misnamed_tests(tmp_path) == ["test_driver.py"]
