"""``python -m ros2_s2dhm.ros.lifecycle_node``: the managed (lifecycle) ``s2dhm_localizer``
(:class:`ros2_s2dhm.ros.localizer_node.LifecycleLocalizerNode`)."""
from ros2_s2dhm.ros.localizer_node import lifecycle_main

if __name__ == "__main__":
    lifecycle_main()
