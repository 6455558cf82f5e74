"""The sweep's grid, its child processes and the machines it runs on."""
