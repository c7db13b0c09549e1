/* queue/qid.c: placeholder, being written */
typedef int placeholder_qid;
