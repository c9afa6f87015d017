"""The transport to where computations run: worker processes (or threads) and shared memory."""
