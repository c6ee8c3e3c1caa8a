"""Thin command-line entry points over the ros2_s2dhm library."""
