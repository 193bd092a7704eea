"""Pool sizing, one job per module (the public face is :mod:`poolscope.advisor`).

- :mod:`~poolscope.sizing.queueing`: the theory (Erlang B/C, M/M/c waits, folk rules);
- :mod:`~poolscope.sizing.workload`: observation (a folded state to a ``Workload``);
- :mod:`~poolscope.sizing.recommend`: advice (a ``Workload`` to an ``Advice``);
- :mod:`~poolscope.sizing.text`: rendering (an ``Advice`` as text lines).
"""
