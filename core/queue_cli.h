/* queue_cli.h -- `mmo queue`: the game event stream and its dead letters (see queue_cli.c). */
#ifndef MMO_QUEUE_CLI_H
#define MMO_QUEUE_CLI_H

struct conf;

/* argv: the words after "queue" (subcommand and its arguments). Returns the exit code. */
int queue_cli(const struct conf *c, int argc, char **argv);

#endif
