/* queue/store.c: placeholder, being written */
typedef int placeholder_store;
