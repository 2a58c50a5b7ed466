/* client/commands.h: the subcommands of the `baton` CLI, one file each (client/cmd_<name>.c).
 * Each takes argc/argv starting at the subcommand name and returns the process exit status. */
#ifndef BT_CLIENT_COMMANDS_H
#define BT_CLIENT_COMMANDS_H

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

extern const struct command commands[];

int cmd_tokenize(int argc, char **argv);         /* client/cmd_tokenize.c */
int cmd_detokenize(int argc, char **argv);       /* client/cmd_tokenize.c */
int cmd_eval(int argc, char **argv);             /* client/cmd_eval.c */
int cmd_generate(int argc, char **argv);         /* client/cmd_generate.c */
int cmd_generate_cluster(int argc, char **argv); /* client/cmd_cluster.c: generate --cluster */
int cmd_run(int argc, char **argv);              /* client/cmd_run.c */
int cmd_mkmodel(int argc, char **argv);          /* client/cmd_mkmodel.c */
int cmd_inspect(int argc, char **argv);          /* client/cmd_inspect.c */
int cmd_chat(int argc, char **argv);             /* client/cmd_chat.c */
int cmd_complete(int argc, char **argv);         /* client/cmd_complete.c */
int cmd_load(int argc, char **argv);             /* client/cmd_load.c */
int cmd_admin(int argc, char **argv);            /* client/cmd_admin.c */

#endif
