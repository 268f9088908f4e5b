"""``edgecam bench``: how close the agent's pipeline comes to the bare interpreter, and what it sends.

One run measures, side by side on the same machine: the bare interpreter's invoke rate (same model, same
threads), the full pipeline through a real Mosquitto (``scenario``), the bytes it put on the uplink
(``meter``), and a cold ``edgecam run`` for start-up time and peak RSS. ``metrics`` turns raw counters into
ratios, ``report`` into a table, a PNG and ``docs/PERFORMANCE.md``.
"""
