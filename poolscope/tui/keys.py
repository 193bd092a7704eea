"""Every key of the TUI in one table: the app's bindings and the help screen are
both generated from it, so help can never miss a key."""

from __future__ import annotations

from dataclasses import dataclass

#: The views in order; ``1``-``9`` and ``tab`` move between them.
VIEWS: tuple[tuple[str, str], ...] = (
    ("pools", "Pools"),
    ("holders", "Holders"),
    ("leaks", "Leaks"),
    ("heartbeat", "Heartbeat"),
    ("connections", "Connections"),
    ("events", "Events"),
    ("advice", "Advice"),
    ("routes", "Routes"),
    ("server", "Server"),
)


@dataclass(frozen=True)
class Key:
    keys: str  # Textual key name(s), comma-separated
    action: str
    shown: str  # how help and the footer show the key
    help: str
    short: str = ""  # footer label, for keys shown there
    footer: bool = False
    priority: bool = False
    replay_only: bool = False


KEYS: tuple[Key, ...] = (
    Key("q", "quit", "q", "quit", short="quit", footer=True),
    Key("question_mark", "help", "?", "this help", short="help", footer=True),
    Key(
        "space",
        "pause",
        "space",
        "pause the screen (data keeps folding); in replay: play / pause",
        short="pause",
        footer=True,
    ),
    Key(
        "slash",
        "filter",
        "/",
        "filter the view: words, type:NAME, pool:NAME",
        short="filter",
        footer=True,
    ),
    Key("escape", "clear", "escape", "clear the filter, close help"),
    Key("tab", "next_view", "tab", "next view", priority=True),
    Key("shift+tab", "prev_view", "shift+tab", "previous view", priority=True),
    *(
        Key(str(i), f"view('{vid}')", str(i), f"{title} view")
        for i, (vid, title) in enumerate(VIEWS, start=1)
    ),
    Key("s", "sort", "s", "sort pools by the next column", short="sort", footer=True),
    Key(
        "w",
        "window",
        "w",
        "window of the pools table, alerts and chart: 1, 5 or 15 minutes",
    ),
    Key("e", "churn", "e", "events view: incidents only, or every event (the churn too)"),
    Key("plus,equals_sign", "refresh(-1)", "+", "refresh more often"),
    Key("minus", "refresh(1)", "-", "refresh less often"),
    Key(
        "ctrl+s",
        "save_screenshot",
        "ctrl+s",
        "save a screenshot (SVG, and PNG when cairosvg is installed)",
        priority=True,
    ),
    Key("full_stop", "step", ".", "step one second forward (pauses)", replay_only=True),
    Key("right_square_bracket", "seek(10)", "]", "seek 10 s forward", replay_only=True),
    Key("left_square_bracket", "seek(-10)", "[", "seek 10 s back", replay_only=True),
    Key("right_curly_bracket", "seek(60)", "}", "seek a minute forward", replay_only=True),
    Key("left_curly_bracket", "seek(-60)", "{", "seek a minute back", replay_only=True),
    Key("greater_than_sign", "speed(2)", ">", "play faster", replay_only=True),
    Key("less_than_sign", "speed(0.5)", "<", "play slower", replay_only=True),
)

#: Refresh intervals ``+``/``-`` step through (seconds).
REFRESH_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
#: Utilisation chart windows ``w`` cycles through (seconds).
WINDOWS = (60.0, 300.0, 900.0)


def help_lines(replay: bool) -> list[tuple[str, str]]:
    return [(k.shown, k.help) for k in KEYS if replay or not k.replay_only]
