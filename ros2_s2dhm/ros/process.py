"""Start-up and shutdown of the package's ROS processes (nodes, player, recorder, soak, demo).

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
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from ros2_s2dhm.ros.transport import apply_transport, socket_buffer_warning


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


def run_node(node_class, args=None, name: str = "node", threads: int = 3) -> int:
    """Run one node until SIGINT/SIGTERM: the camera-frames transport set up first, a
    multi-threaded executor spun in bounded waits, then an orderly stop. Returns the exit code:
    0, or 1 (the reason logged, no traceback) when the node refused its parameters."""
    transport = apply_transport()  # before the middleware reads its environment
    init_ros(args=args)
    node = executor = None
    code = 0
    try:
        node = node_class()
        node.get_logger().info(transport.summary())
        if transport.applied is not None and (warning := socket_buffer_warning()):
            node.get_logger().warning(warning)
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        while rclpy.ok():  # a bounded wait: the signal handler runs between waits
            executor.spin_once(timeout_sec=SIGNAL_POLL_S)
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        rclpy.logging.get_logger(name).fatal(f"invalid parameter: {exc}")
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
