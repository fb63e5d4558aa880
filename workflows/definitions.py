"""Definition documents: their schema and every rule of API.md §3.1, each problem with its path."""

import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from blobs.registry import Problem
from workflows import values
from workflows.components.base import Component, component_class

CATEGORIES = {"workflow": "workflow_definition", "playground": "playground_definition"}
VERSION = "1.0.1"
ROUTES = ("success", "failure", "next")
PORT_CATEGORIES = ("config", "input", "output")
ALIAS = re.compile(r"^[a-z0-9_-]{1,64}\Z")
MAX_COMPONENTS = 500
MAX_CONNECTIONS = 2000


def empty_document(category: str) -> dict:
    document = {"type": CATEGORIES[category], "version": VERSION, "components": [], "connections": []}
    if category == "playground":
        document["layout"] = {}
    return document


@dataclass
class Graph:
    """A validated definition, ready to run."""

    components: dict[str, dict]
    classes: dict[str, type[Component]]
    config: dict[str, dict]  # component id → plain config values (defaults applied)
    incoming: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    outgoing: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))

    def entries(self) -> list[str]:
        return [cid for cid, cls in self.classes.items() if cls.entry]

    def by_type(self, component_type: str) -> list[str]:
        return [cid for cid, component in self.components.items() if component["type"] == component_type]


def validate(document: Any) -> list[Problem]:
    problems: list[Problem] = []
    _build(document, problems)
    return problems


def graph_of(document: Any) -> Graph:
    """The runnable graph of a valid document (raise ValueError if it is not valid)."""
    problems: list[Problem] = []
    graph = _build(document, problems)
    if problems or graph is None:
        raise ValueError(problems[0].message if problems else "invalid definition")
    return graph


def _build(document: Any, problems: list[Problem]) -> Graph | None:
    def problem(path: str, message: str) -> None:
        problems.append(Problem(path=path, message=message))

    if not isinstance(document, dict):
        problem("", "A definition is a JSON object.")
        return None
    if document.get("type") not in CATEGORIES.values():
        problem("type", "Must be workflow_definition or playground_definition.")
    if document.get("version") != VERSION:
        problem("version", f"Must be {VERSION!r}.")
    allowed_keys = {"type", "version", "components", "connections", "layout", "name", "description"}
    for key in sorted(set(document) - allowed_keys):
        problem(key, "Unknown field.")
    components = document.get("components")
    connections = document.get("connections")
    if not isinstance(components, list):
        problem("components", "Must be a list.")
        components = []
    if not isinstance(connections, list):
        problem("connections", "Must be a list.")
        connections = []
    if len(components) > MAX_COMPONENTS:
        problem("components", f"At most {MAX_COMPONENTS} components.")
        return None
    if len(connections) > MAX_CONNECTIONS:
        problem("connections", f"At most {MAX_CONNECTIONS} connections.")
        return None

    graph = Graph(components={}, classes={}, config={})
    index_of: dict[str, int] = {}
    aliases: set[str] = set()
    for i, component in enumerate(components):
        path = f"components[{i}]"
        cid = _check_component(component, path, problem)
        if cid is None:
            continue
        if cid in graph.components:
            problem(f"{path}.id", f"The id {cid!r} is used twice.")
            continue
        alias = component.get("alias")
        if isinstance(alias, str):  # any other alias was reported by _check_component
            if alias in aliases:
                problem(f"{path}.alias", f"The alias {alias!r} is used twice.")
            aliases.add(alias)
        cls = component_class(component["type"])
        if cls is None:
            problem(f"{path}.type", f"Unknown component type {component['type']!r}.")
            continue
        graph.components[cid] = component
        graph.classes[cid] = cls
        graph.config[cid] = _check_ports(component, cls, path, problem)
        index_of[cid] = i
        if component["type"] == "flow.input" and alias is None:
            problem(f"{path}.alias", "A flow.input needs an alias: input_data names it.")

    starts = graph.by_type("flow.start")
    if len(starts) != 1:
        problem("components", f"A definition has exactly one flow.start (found {len(starts)}).")

    connection_ids: set[str] = set()
    accepted: list[tuple[int, dict]] = []  # (index, connection) of those in the graph
    for i, connection in enumerate(connections):
        path = f"connections[{i}]"
        if _check_connection(connection, path, graph, connection_ids, problem):
            graph.outgoing[connection["source_id"]].append(connection)
            graph.incoming[connection["target_id"]].append(connection)
            accepted.append((i, connection))

    for cid in graph.entries():
        if graph.incoming.get(cid):
            problem(f"components[{index_of[cid]}]", "An entry component (flow.start, flow.input) takes no incoming connection.")
    _check_cycles(graph, accepted, problem)
    _check_reachable(graph, index_of, problem)
    return graph


def _check_component(component: Any, path: str, problem) -> str | None:
    if not isinstance(component, dict):
        problem(path, "A component is an object.")
        return None
    allowed = {"id", "category", "type", "name", "position", "ports", "alias", "description"}
    for key in sorted(set(component) - allowed):
        problem(f"{path}.{key}", "Unknown field.")
    cid = component.get("id")
    ok = True
    if not isinstance(cid, str) or not 1 <= len(cid) <= 128:
        problem(f"{path}.id", "Must be a string of 1 to 128 characters.")
        ok = False
    for key in ("category", "type", "name"):
        if not isinstance(component.get(key), str):
            problem(f"{path}.{key}", "Must be a string.")
            ok = False
    position = component.get("position")
    if not (
        isinstance(position, dict)
        and set(position) == {"x", "y"}
        and all(isinstance(position[k], (int, float)) and not isinstance(position[k], bool) for k in ("x", "y"))
    ):
        problem(f"{path}.position", "Must be {x: number, y: number}.")
    if not isinstance(component.get("ports", []), list):
        problem(f"{path}.ports", "Must be a list.")
        ok = False
    alias = component.get("alias")
    if alias is not None and (not isinstance(alias, str) or not ALIAS.match(alias)):
        problem(f"{path}.alias", "Must match ^[a-z0-9_-]{1,64}$.")
    return cid if ok else None


def _declared(cls: type[Component], category: str) -> dict:
    return {"config": cls.config, "input": cls.inputs, "output": cls.outputs}[category]


def _check_ports(component: dict, cls: type[Component], path: str, problem) -> dict:
    config: dict[str, Any] = {}
    seen: set[tuple[str, str]] = set()
    for j, port in enumerate(component.get("ports", [])):
        ppath = f"{path}.ports[{j}]"
        if not isinstance(port, dict) or port.get("category") not in PORT_CATEGORIES or not isinstance(port.get("route"), str):
            problem(ppath, "A port is {category: config|input|output, route, value?}.")
            continue
        for key in sorted(set(port) - {"category", "route", "value"}):
            problem(f"{ppath}.{key}", "Unknown field.")
        category, route = port["category"], port["route"]
        if (category, route) in seen:
            problem(f"{ppath}.route", f"The {category} port {route!r} is listed twice.")
        seen.add((category, route))
        declared = _declared(cls, category)
        if route not in declared and not (category == "input" and cls.any_input_routes):
            problem(f"{ppath}.route", f"{cls.type} has no {category} port {route!r}.")
            continue
        spec = declared.get(route)
        if "value" not in port or port["value"] is None:
            continue
        try:
            value_type, plain = values.unwrap(port["value"])
        except values.ValueError_ as exc:
            problem(f"{ppath}.value", str(exc))
            continue
        if spec is not None and spec.type != "any" and value_type != spec.type and not (
            spec.type == "float" and value_type == "integer"
        ):
            problem(f"{ppath}.value", f"The {route} port takes a {spec.type} value, not {value_type}.")
            continue
        if category == "config" and spec is not None:
            message = _check_bounds(spec, plain)
            if message:
                problem(f"{ppath}.value", message)
                continue
            config[route] = plain
    for route, spec in cls.config.items():
        # A port given with a bad value was reported at its value; it is not missing too.
        if route not in config and ("config", route) not in seen:
            if spec.required and spec.default is None:
                problem(f"{path}.ports", f"{cls.type} needs the config port {route!r}.")
            elif spec.default is not None:
                config[route] = spec.default
    return config


def _check_bounds(spec, plain: Any) -> str | None:
    if spec.choices and plain not in spec.choices:
        return f"Must be one of {', '.join(spec.choices)}."
    if isinstance(plain, (int, float)) and not isinstance(plain, bool):
        if spec.minimum is not None and plain < spec.minimum:
            return f"Must be at least {spec.minimum}."
        if spec.maximum is not None and plain > spec.maximum:
            return f"Must be at most {spec.maximum}."
    return None


def _check_connection(connection: Any, path: str, graph: Graph, ids: set[str], problem) -> bool:
    if not isinstance(connection, dict):
        problem(path, "A connection is an object.")
        return False
    for key in sorted(set(connection) - {"id", "source_id", "target_id", "source_port", "target_port", "route"}):
        problem(f"{path}.{key}", "Unknown field.")
    ok = True
    cid = connection.get("id")
    if not isinstance(cid, str) or not cid:
        problem(f"{path}.id", "Must be a non-empty string.")
        ok = False
    elif cid in ids:
        problem(f"{path}.id", f"The id {cid!r} is used twice.")
        ok = False
    else:
        ids.add(cid)
    if connection.get("route") not in ROUTES:
        problem(f"{path}.route", "Must be success, failure or next.")
        ok = False
    for end in ("source_id", "target_id"):
        end_id = connection.get(end)
        if not isinstance(end_id, str) or end_id not in graph.components:
            problem(f"{path}.{end}", f"No component has the id {end_id!r}.")
            ok = False
    if not ok:
        return False
    source_cls = graph.classes[connection["source_id"]]
    target_cls = graph.classes[connection["target_id"]]
    source_port, target_port = connection.get("source_port"), connection.get("target_port")
    if source_port is not None:
        if not isinstance(source_port, str):
            problem(f"{path}.source_port", "Must be a string.")
            return False
        known = set(source_cls.outputs) | ({"error"} if connection["route"] in ("failure", "next") else set())
        if source_port not in known:
            problem(f"{path}.source_port", f"{source_cls.type} has no output port {source_port!r}.")
            ok = False
    if target_port is not None:
        if not isinstance(target_port, str):
            problem(f"{path}.target_port", "Must be a string.")
            return False
        if target_port not in target_cls.inputs and not target_cls.any_input_routes:
            problem(f"{path}.target_port", f"{target_cls.type} has no input port {target_port!r}.")
            ok = False
    if (source_port is None) != (target_port is None):
        problem(path, "Give both source_port and target_port, or neither for a control-only connection.")
        ok = False
    elif ok and source_port is not None and source_port != "error":
        out_type = source_cls.outputs[source_port].type
        in_spec = target_cls.inputs.get(target_port)
        if in_spec is not None and "any" not in (out_type, in_spec.type) and out_type != in_spec.type:
            problem(path, f"An {out_type} output cannot feed the {in_spec.type} input {target_port!r}.")
            ok = False
    if connection["source_id"] == connection["target_id"]:
        problem(path, "A component cannot connect to itself.")
        ok = False
    return ok


def _check_cycles(graph: Graph, accepted: list[tuple[int, dict]], problem) -> None:
    indegree = {cid: 0 for cid in graph.components}
    for cid, edges in graph.incoming.items():
        indegree[cid] = len(edges)
    queue = deque(cid for cid, degree in indegree.items() if degree == 0)
    while queue:
        cid = queue.popleft()
        for edge in graph.outgoing.get(cid, []):
            indegree[edge["target_id"]] -= 1
            if indegree[edge["target_id"]] == 0:
                queue.append(edge["target_id"])
    # What Kahn leaves over also holds components downstream of a cycle: blame a
    # connection whose target leads back to its source, which is truly on the cycle.
    left = {cid for cid, degree in indegree.items() if degree > 0}
    for i, connection in accepted:
        if connection["source_id"] in left and _leads_to(graph, connection["target_id"], connection["source_id"]):
            problem(f"connections[{i}]", "This connection is part of a cycle.")
            return


def _leads_to(graph: Graph, start: str, goal: str) -> bool:
    seen, queue = {start}, deque([start])
    while queue:
        cid = queue.popleft()
        if cid == goal:
            return True
        for edge in graph.outgoing.get(cid, []):
            if edge["target_id"] not in seen:
                seen.add(edge["target_id"])
                queue.append(edge["target_id"])
    return False


def _check_reachable(graph: Graph, index_of: dict[str, int], problem) -> None:
    seen = set(graph.entries())
    queue = deque(seen)
    while queue:
        for edge in graph.outgoing.get(queue.popleft(), []):
            if edge["target_id"] not in seen:
                seen.add(edge["target_id"])
                queue.append(edge["target_id"])
    for cid in graph.components:
        if cid not in seen:
            problem(f"components[{index_of[cid]}]", "Not reachable from flow.start or a flow.input.")
