"""Start-up and shutdown of the package's ROS processes (node, player, recorder, demo).

rclpy's own SIGINT handler shuts the context down from the signal, while executor threads may
still be publishing: they then fail with "publisher's context is invalid" and spinning raises
ExternalShutdownException. Here SIGINT and SIGTERM (what ``ros2 launch`` sends) raise
KeyboardInterrupt in the main thread instead, so each process stops its executor, destroys its
node and only then shuts the context down.
"""
from __future__ import annotations

import signal

import rclpy
from rclpy.signals import SignalHandlerOptions


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def init_ros(args=None, context=None) -> None:
    """``rclpy.init`` without rclpy's signal handlers; SIGINT/SIGTERM raise KeyboardInterrupt."""
    rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
