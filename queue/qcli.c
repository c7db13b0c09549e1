/* queue/qcli.c: placeholder, being written */
typedef int placeholder_qcli;
