"""Federated learning: many clients train a shared model on their own data and a server
averages what they learned (FedAvg, FedProx, DP-FedAvg), simulated inside the loop's one
jitted step, the clients vectorised with vmap and sharded over the devices."""
