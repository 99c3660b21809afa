"""The container around the workload: which of its files a checkpoint carries, and what the
workload was built from (its version). Memory is CRIU's; these are what a process is besides."""
