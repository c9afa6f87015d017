"""Evolve an XOR network with neat-python and write it as genome.json (neat's network JSON),
which `from_neat("genome.json")` and `gradserve-client import neat genome.json` read.

    pip install neat-python==2.0.0 && python neat_genome.py
"""

import neat
from neat.export import export_network_json

XOR = [((0.0, 0.0), 0.0), ((0.0, 1.0), 1.0), ((1.0, 0.0), 1.0), ((1.0, 1.0), 0.0)]


def fitness(genomes, config):
    for _, genome in genomes:
        net = neat.nn.FeedForwardNetwork.create(genome, config)
        genome.fitness = 4.0 - sum((net.activate(x)[0] - y) ** 2 for x, y in XOR)


config = neat.Config(
    neat.DefaultGenome, neat.DefaultReproduction, neat.DefaultSpeciesSet, neat.DefaultStagnation, "neat-xor.ini"
)
winner = neat.Population(config, seed=0).run(fitness, 50)
net = neat.nn.FeedForwardNetwork.create(winner, config)
export_network_json(net, filepath="genome.json")
print(f"genome.json: fitness {winner.fitness:.3f} of 4")
