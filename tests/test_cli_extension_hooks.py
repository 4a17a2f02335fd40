"""`oversip-hooks plugins` and extension hooks, through the real command: each extension
hook is listed with the plugin that declares it and the plugins that implement it, in
the order `run` calls them (checked against what a run records), as text and as JSON;
the runtime's own extension hooks are listed as declared by `oversip_hooks`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.processes import command, write

# `health` declares two hooks and implements one; `cache` implements both, one of them
# tryfirst; `db` implements one and is registered before `health`, the declaring plugin,
# which must not matter. The server calls `cache_status` once started, logs who answered,
# and stops.
FILES = {
    "db.py": """
        from oversip_hooks import hookimpl

        @hookimpl
        def cache_status(runtime):
            return "db"
    """,
    "health.py": """
        from oversip_hooks import hookimpl, hookspec

        class Specs:
            @hookspec
            def cache_status(self, runtime):
                "Say whether this plugin is healthy."

            @hookspec(firstresult=True)
            def lookup(self, key):
                "Find a value."

        extension_hooks = Specs

        @hookimpl
        def cache_status():
            return "health"
    """,
    "cache.py": """
        from oversip_hooks import hookimpl

        @hookimpl(tryfirst=True)
        def cache_status():
            return "cache"

        @hookimpl
        def lookup(key):
            return None
    """,
    "server.py": """
        from oversip_hooks import get_logger

        log = get_logger("server")

        async def started(runtime):
            answers = await runtime.hooks.cache_status()
            log.log_system_info("answered: " + ", ".join(answers))
            runtime.stop()
    """,
}
ARGS = ["server.py", "--plugin", "db", "--plugin", "health", "--plugin", "cache"]


async def test_plugins_lists_extension_hooks_in_the_order_run_calls_them(tmp_path: Path) -> None:
    write(tmp_path, FILES)

    listed = await command(tmp_path, "plugins", *ARGS, "--json")
    assert listed.status == 0, listed.err
    listing = json.loads(listed.out)
    assert _declared_by_plugins(listing) == {
        "cache_status": {"declared_by": "health", "order": ["cache", "db", "health"]},
        "lookup": {"declared_by": "health", "order": ["cache"]},
    }
    assert listing["hooks"]["started"] == ["server"]  # the lifecycle's listing is unchanged

    # What `run` does is what `plugins` said.
    ran = await command(tmp_path, "run", *ARGS)
    assert ran.status == 0, ran.err
    answered = [m[1] for line in ran.err if (m := re.search(r"answered: (.*)$", line))]
    assert answered == [", ".join(listing["extension_hooks"]["cache_status"]["order"])]

    text = await command(tmp_path, "plugins", *ARGS)
    assert text.status == 0, text.err
    section = _section(text.out, "extension hooks, in call order:")
    assert "cache_status cache, db, health (declared by health)" in section
    assert "lookup cache (declared by health)" in section


async def test_a_declared_hook_that_nobody_implements_is_listed_as_none(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "quiet.py": """
                from oversip_hooks import hookimpl, hookspec

                class Specs:
                    @hookspec
                    def on_quiet(self):
                        "Nobody implements this."

                extension_hooks = Specs

                @hookimpl
                def started():
                    pass
            """
        },
    )
    listed = await command(tmp_path, "plugins", "--plugin", "quiet", "--json")
    assert listed.status == 0, listed.err
    assert _declared_by_plugins(json.loads(listed.out)) == {
        "on_quiet": {"declared_by": "quiet", "order": []}
    }
    text = await command(tmp_path, "plugins", "--plugin", "quiet")
    section = _section(text.out, "extension hooks, in call order:")
    assert "on_quiet (none) (declared by quiet)" in section


async def test_the_runtimes_own_extension_hooks_are_listed_as_declared_by_it(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"server.py": "def started():\n    pass\n"})
    listed = await command(tmp_path, "plugins", "server.py", "--json")
    assert listed.status == 0, listed.err
    extension = json.loads(listed.out)["extension_hooks"]
    assert _declared_by_plugins({"extension_hooks": extension}) == {}
    assert {found["declared_by"] for found in extension.values()} <= {"oversip_hooks"}
    text = await command(tmp_path, "plugins", "server.py")
    section = _section(text.out, "extension hooks, in call order:")
    assert section == [
        f"{hook} (none) (declared by oversip_hooks)" for hook in sorted(extension)
    ] or section == ["(none)"]


async def test_an_implementation_of_an_undeclared_hook_is_refused_by_plugins(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"cache.py": FILES["cache.py"]})
    listed = await command(tmp_path, "plugins", "--plugin", "cache")
    assert listed.status == 2
    assert listed.out == ""
    assert any("unknown hook 'cache_status'" in line for line in listed.err), listed.err


def _declared_by_plugins(listing: dict[str, Any]) -> dict[str, Any]:
    """The extension hooks of the listing that plugins declare, not the runtime."""
    return {
        hook: found
        for hook, found in listing["extension_hooks"].items()
        if found["declared_by"] != "oversip_hooks"
    }


def _section(out: str, title: str) -> list[str]:
    """The lines of one section of the text listing, each with its columns' padding
    reduced to one space."""
    lines = out.splitlines()
    start = lines.index(title) + 1
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return [" ".join(line.split()) for line in lines[start:end]]
