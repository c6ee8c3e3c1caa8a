"""Start-up and shutdown of the package's ROS processes (node, player, recorder, demo).

rclpy's own SIGINT handler shuts the context down from the signal, while executor threads may
still be publishing: they then fail with "publisher's context is invalid" and spinning raises
ExternalShutdownException. Here SIGINT and SIGTERM (what ``ros2 launch`` sends) raise
KeyboardInterrupt in the main thread instead, so each process stops its executor, destroys its
node and only then shuts the context down.

A Python signal handler runs only when the main thread is between C calls: an executor waiting
with no timeout on a node with nothing to wake it (a managed node after ``cleanup`` has no timer
left) would never see the signal. Spin in waits of at most :data:`SIGNAL_POLL_S`.
"""
from __future__ import annotations

import signal

import rclpy
from rclpy.signals import SignalHandlerOptions


#: longest wait of a spinning main thread, so SIGINT/SIGTERM are handled within it (s)
SIGNAL_POLL_S = 0.2


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def init_ros(args=None, context=None, domain_id=None) -> None:
    """``rclpy.init`` without rclpy's signal handlers; SIGINT/SIGTERM raise KeyboardInterrupt."""
    rclpy.init(args=args, context=context, domain_id=domain_id,
               signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
