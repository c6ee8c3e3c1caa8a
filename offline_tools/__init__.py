"""offline_tools."""
