"""ModelMemory's policy, on plain resources (the engine's own rules; the diffusion handles are
tested with real models in test_optimize): Belady's rule, shared components, the host tier."""

from __future__ import annotations

from nodegraph.resources import Component, ModelMemory, is_resource


class Weights:
    """A resource of named components that records what happens to it."""

    def __init__(self, name: str, parts: dict[str, int], offloads: bool = False):
        self.name, self.parts, self.offloads = name, parts, offloads
        self.state, self.kept = "released", frozenset()

    def components(self) -> dict[str, Component]:
        return {part: Component(part, size) for part, size in self.parts.items()}

    def load(self) -> None:
        self.state = "loaded"

    def unload(self, keep=frozenset()) -> None:
        self.state, self.kept = "released", keep

    def offload(self, keep=frozenset()) -> None:
        self.state, self.kept = "on host", keep


def test_a_resource_is_what_has_components_load_and_unload():
    assert is_resource(Weights("a", {}))
    assert not is_resource("a string") and not is_resource(Weights)


def test_short_of_memory_the_resource_used_furthest_ahead_goes_first():
    a, b, c = (Weights(n, {f"unet-{n}": 100}) for n in "abc")
    memory = ModelMemory(budget_bytes=250)
    upcoming = {"a": 5, "b": 1, "c": 0}
    memory.use([a], lambda r: upcoming[r.name])
    memory.use([b], lambda r: upcoming[r.name])
    memory.use([c], lambda r: upcoming[r.name])  # a is needed last: a goes, not the oldest by use
    assert (a.state, b.state, c.state) == ("released", "loaded", "loaded")
    assert memory.peak_bytes == 200 and memory.loads == 3


def test_shared_components_count_once_and_stay_for_who_needs_them():
    comic = Weights("comic", {"vae": 50, "text": 30, "unet-comic": 100})
    pixel = Weights("pixel", {"vae": 50, "text": 30, "unet-pixel": 100})
    memory = ModelMemory(budget_bytes=1000)
    memory.use([comic], lambda r: None)
    memory.use([pixel], lambda r: None)
    assert memory.resident_bytes() == 50 + 30 + 100 + 100
    memory.done([comic], lambda r: None, keep=frozenset({"vae"}))
    assert comic.state == "released" and comic.kept >= {"vae", "text", "unet-pixel"}


def test_where_resources_can_offload_releasing_moves_them_to_the_host_while_it_has_room():
    first, second = Weights("first", {"one": 100}, offloads=True), Weights("second", {"two": 100}, offloads=True)
    memory = ModelMemory(budget_bytes=1000, host_budget_bytes=150)
    memory.use([first], lambda r: None)
    memory.done([first], lambda r: None)
    assert first.state == "on host"
    memory.use([first], lambda r: None)  # back from the host: not a load
    assert first.state == "loaded" and memory.loads == 1
    memory.use([second], lambda r: None)
    memory.done([first, second], lambda r: None)
    assert {first.state, second.state} == {"on host", "released"}  # the host holds one of them
    memory.release_all()
    assert first.state == second.state == "released"
