"""Tests that start their own private local Ray instance in the test process.

They live outside ``tests/distributed`` on purpose: that package keeps one 3-node cluster up
for all its modules, and a second instance started and shut down in the same process while it
runs left the cluster's next driver with dead actors and "ownerless" objects (test_run_store:
ActorDiedError at setup; test_sampling: OwnerDiedError in ``ray.data.from_arrow``;
test_roles -> test_run_store reproduces it, each alone passes). Pytest tears the package's
cluster down before it enters this directory."""
