"""The only code that talks to Kubernetes: a lean JSON client, the node index, pods and events."""
