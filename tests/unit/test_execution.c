/* test_execution.c - assembling the Execution object and its streaming
   events from message sequences as IPython sends them, and surviving what a
   hostile kernel might send instead. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "execution.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonv.h"
#include "tap.h"
#include "testjson.h"

/* Apply content (a test literal) and add its events to log (may be NULL).
   Returns how many events it produced. */
static size_t
s_feed (execution_t *e, json_t *log, const char *channel, const char *type, const char *content)
{
    json_t *c = s_j (content);
    json_t *ev = execution_apply (e, channel, type, c);
    size_t n = json_array_size (ev);
    if (log)
        json_array_extend (log, ev);
    json_decref (ev);
    json_decref (c);
    return n;
}

static size_t
s_iopub (execution_t *e, json_t *log, const char *type, const char *content)
{
    return s_feed (e, log, "iopub", type, content);
}

static size_t
s_shell (execution_t *e, json_t *log, const char *content)
{
    return s_feed (e, log, "shell", "execute_reply", content);
}

/* True when actual equals the test literal expected; shows both if not. */
static bool
s_same (const json_t *actual, const char *expected)
{
    json_t *want = s_j (expected);
    bool same = actual && json_equal ((json_t *)actual, want);
    if (!same) {
        char *a = actual ? jsonv_dumps (actual) : NULL;
        char *w = jsonv_dumps (want);
        printf ("# got:  %.2000s\n# want: %.2000s\n", a ? a : "NULL", w);
        free (a);
        free (w);
    }
    json_decref (want);
    return same;
}

static bool
s_exec_is (const execution_t *e, const char *expected)
{
    json_t *j = execution_to_json (e);
    bool same = s_same (j, expected);
    json_decref (j);
    return same;
}

/* One field of the Execution object, for tests that look at a part. */
static json_t *
s_exec_get (const execution_t *e, const char *key, json_t **whole)
{
    *whole = execution_to_json (e);
    return json_object_get (*whole, key);
}

#define EMPTY_EXEC                                                                                 \
    "{'results':[],'logs':{'stdout':[],'stderr':[]},'error':null,'execution_count':null,"          \
    "'truncated':false}"

/* ---- a real run --------------------------------------------------------- */

#define PRINT_EXEC                                                                                 \
    "{'results':[{'text':'2','formats':['text'],'is_main_result':true,'display_id':null}],"        \
    "'logs':{'stdout':['a\\n'],'stderr':[]},'error':null,'execution_count':1,'truncated':false}"
#define PRINT_EVENTS                                                                               \
    "[{'event':'execution_count','data':{'execution_count':1}},"                                   \
    "{'event':'stdout','data':{'text':'a\\n'}},"                                                   \
    "{'event':'result','data':{'text':'2','formats':['text'],'is_main_result':true,"               \
    "'display_id':null}}]"
#define REPLY_OK "{'status':'ok','execution_count':1,'user_expressions':{},'payload':[]}"

static void
test_print_then_expression (void)
{
    /* print('a'); 1+1 - reply after idle */
    execution_t *e = execution_new (1 << 20, NULL);
    json_t *ev = json_array ();
    s_iopub (e, ev, "status", "{'execution_state':'busy'}");
    s_iopub (e, ev, "execute_input", "{'code':'print(1)','execution_count':1}");
    s_iopub (e, ev, "stream", "{'name':'stdout','text':'a\\n'}");
    s_iopub (e, ev, "execute_result",
             "{'execution_count':1,'data':{'text/plain':'2'},'metadata':{}}");
    ok (!execution_done (e), "not done before idle and reply");
    s_iopub (e, ev, "status", "{'execution_state':'idle'}");
    ok (!execution_done (e), "idle alone does not finish the run");
    s_shell (e, ev, REPLY_OK);
    ok (execution_done (e), "idle then execute_reply finishes the run");
    ok (s_exec_is (e, PRINT_EXEC), "Execution: main result text 2, stdout a, count 1");
    ok (s_same (ev, PRINT_EVENTS), "events: execution_count once, stdout, result, in order");
    json_decref (ev);
    execution_destroy (&e);
    ok (e == NULL, "destroy nulls the caller's pointer");
    execution_destroy (&e);
    execution_destroy (NULL);

    /* the shell reply overtakes iopub: done only once idle arrives too */
    e = execution_new (1 << 20, NULL);
    ev = json_array ();
    s_iopub (e, ev, "status", "{'execution_state':'busy'}");
    s_iopub (e, ev, "execute_input", "{'code':'print(1)','execution_count':1}");
    s_shell (e, ev, REPLY_OK);
    ok (!execution_done (e), "execute_reply alone does not finish the run");
    s_iopub (e, ev, "stream", "{'name':'stdout','text':'a\\n'}");
    s_iopub (e, ev, "execute_result",
             "{'execution_count':1,'data':{'text/plain':'2'},'metadata':{}}");
    ok (!execution_done (e), "still not done while iopub is busy");
    s_iopub (e, ev, "status", "{'execution_state':'idle'}");
    ok (execution_done (e), "execute_reply then idle finishes the run");
    ok (s_exec_is (e, PRINT_EXEC), "same Execution when the reply comes first");
    ok (s_same (ev, PRINT_EVENTS), "same events when the reply comes first");
    json_decref (ev);
    execution_destroy (&e);

    /* stderr goes to its own log; one entry per message, in order */
    e = execution_new (1 << 20, NULL);
    ev = json_array ();
    s_iopub (e, ev, "stream", "{'name':'stdout','text':'1\\n'}");
    s_iopub (e, ev, "stream", "{'name':'stderr','text':'warn\\n'}");
    s_iopub (e, ev, "stream", "{'name':'stdout','text':'2\\n'}");
    s_iopub (e, ev, "stream", "{'name':'stdout','text':''}");
    ok (s_exec_is (e, "{'results':[],'logs':{'stdout':['1\\n','2\\n',''],'stderr':['warn\\n']},"
                      "'error':null,'execution_count':null,'truncated':false}"),
        "stdout and stderr kept apart, one entry per message, empty text kept");
    ok (s_same (ev, "[{'event':'stdout','data':{'text':'1\\n'}},"
                    "{'event':'stderr','data':{'text':'warn\\n'}},"
                    "{'event':'stdout','data':{'text':'2\\n'}},"
                    "{'event':'stdout','data':{'text':''}}]"),
        "stream events name their stream");
    json_decref (ev);
    execution_destroy (&e);

    /* a count first seen in the reply is announced once */
    e = execution_new (1 << 20, NULL);
    ev = json_array ();
    s_shell (e, ev, "{'status':'ok','execution_count':4}");
    s_iopub (e, ev, "execute_input", "{'code':'x','execution_count':4}");
    s_iopub (e, ev, "execute_result", "{'execution_count':4,'data':{'text/plain':'x'}}");
    json_t *whole;
    json_t *count = s_exec_get (e, "execution_count", &whole);
    ok (json_integer_value (count) == 4, "execution_count from the reply recorded");
    json_decref (whole);
    ok (json_array_size (ev) == 2
            && s_same (json_array_get (ev, 0),
                       "{'event':'execution_count','data':{'execution_count':4}}"),
        "execution_count event emitted once per execution");
    json_decref (ev);
    execution_destroy (&e);
}

static void
test_events_are_copies (void)
{
    execution_t *e = execution_new (1 << 20, NULL);
    json_t *c = s_j ("{'execution_count':1,'data':{'text/plain':'2'}}");
    json_t *ev = execution_apply (e, "iopub", "execute_result", c);
    json_t *data = json_object_get (json_array_get (ev, 1), "data");
    json_object_set_new (data, "text", json_string ("tampered"));
    json_object_set_new (json_object_get (c, "data"), "text/plain", json_string ("tampered"));
    json_t *whole;
    json_t *results = s_exec_get (e, "results", &whole);
    json_object_set_new (json_array_get (results, 0), "text", json_string ("tampered"));
    json_decref (whole);
    ok (s_exec_is (e, "{'results':[{'text':'2','formats':['text'],'is_main_result':true,"
                      "'display_id':null}],'logs':{'stdout':[],'stderr':[]},'error':null,"
                      "'execution_count':1,'truncated':false}"),
        "changing the content, an event or a returned Execution does not change the run");
    json_decref (ev);
    json_decref (c);
    execution_destroy (&e);
}

/* ---- MIME bundles ------------------------------------------------------- */

static void
test_bundle (void)
{
    json_t *data = s_j ("{'application/vnd.plotly.v1+json':{'data':[1]},"
                        "'text/plain':['multi','line'],"
                        "'image/png':'iVBORw0KGgo=\\n',"
                        "'text/html':'<p>x</p>',"
                        "'application/json':[1,{'a':null}],"
                        "'text/markdown':5,"
                        "'text/x-custom':'c',"
                        "'application/javascript':'alert(1)',"
                        "'image/svg+xml':['<svg>','</svg>'],"
                        "'image/jpeg':'/9j/',"
                        "'application/pdf':'JVBER',"
                        "'text/latex':'$x$',"
                        "'application/weird':{'obj':1},"
                        "'text/mixed':['a',1]}");
    json_t *r = execution_result_from_bundle (data, false, "d");
    ok (s_same (r, "{'text':'multiline','html':'<p>x</p>','svg':'<svg></svg>',"
                   "'png':'iVBORw0KGgo=\\n','jpeg':'/9j/','pdf':'JVBER','latex':'$x$',"
                   "'json':[1,{'a':null}],'javascript':'alert(1)',"
                   "'extra':{'application/vnd.plotly.v1+json':{'data':[1]},'text/x-custom':'c'},"
                   "'formats':['text','html','svg','png','jpeg','pdf','latex','json',"
                   "'javascript'],'is_main_result':false,'display_id':'d'}"),
        "bundle: fields mapped, string arrays joined, +json kept as JSON, wrong types "
        "dropped, formats in fixed order");
    json_decref (r);
    json_decref (data);

    data = s_j ("{'application/json':'s','text/markdown':'# t','text/html':'<i>t</i>',"
                "'text/plain':'t'}");
    r = execution_result_from_bundle (data, true, NULL);
    ok (s_same (r, "{'text':'t','html':'<i>t</i>','markdown':'# t','json':'s',"
                   "'formats':['text','html','markdown','json'],'is_main_result':true,"
                   "'display_id':null}"),
        "formats follow the fixed order, not the bundle's; a JSON string stays JSON");
    json_decref (r);
    json_decref (data);

    data = s_j ("{}");
    r = execution_result_from_bundle (data, true, NULL);
    ok (s_same (r, "{'formats':[],'is_main_result':true,'display_id':null}"),
        "an empty bundle makes a result without formats");
    json_decref (r);
    json_decref (data);

    data = s_j ("['text/plain']");
    ok (execution_result_from_bundle (data, false, NULL) == NULL, "a non-object bundle: NULL");
    ok (execution_result_from_bundle (NULL, false, NULL) == NULL, "a NULL bundle: NULL");
    json_decref (data);
}

/* ---- displays ----------------------------------------------------------- */

static void
test_display_update (void)
{
    execution_t *e = execution_new (1 << 20, NULL);
    json_t *ev = json_array ();
    /* h = display('0%', display_id=True); display('other'); h.display('0%'); h.update(...) */
    s_iopub (e, ev, "display_data",
             "{'data':{'text/plain':'0%'},'metadata':{},'transient':{'display_id':'bar'}}");
    s_iopub (e, ev, "display_data", "{'data':{'text/plain':'other'},'metadata':{},'transient':{}}");
    s_iopub (e, ev, "display_data",
             "{'data':{'text/plain':'0%'},'metadata':{},'transient':{'display_id':'bar'}}");
    ok (json_array_size (ev) == 3, "three result events");
    json_array_clear (ev);
    s_iopub (e, ev, "update_display_data",
             "{'data':{'text/plain':'100%','text/html':'<b>100%</b>'},'metadata':{},"
             "'transient':{'display_id':'bar'}}");
    ok (s_same (ev, "[{'event':'display_update','data':{'display_id':'bar','result':"
                    "{'text':'100%','html':'<b>100%</b>','formats':['text','html'],"
                    "'is_main_result':false,'display_id':'bar'}}}]"),
        "one display_update event carrying the new result");
    json_t *whole;
    json_t *results = s_exec_get (e, "results", &whole);
    ok (s_same (results,
                "[{'text':'100%','html':'<b>100%</b>','formats':['text','html'],"
                "'is_main_result':false,'display_id':'bar'},"
                "{'text':'other','formats':['text'],'is_main_result':false,'display_id':null},"
                "{'text':'100%','html':'<b>100%</b>','formats':['text','html'],"
                "'is_main_result':false,'display_id':'bar'}]"),
        "every result with that display_id updated in place, the others untouched");
    json_decref (whole);

    json_array_clear (ev);
    s_iopub (e, ev, "update_display_data",
             "{'data':{'text/plain':'x'},'metadata':{},'transient':{'display_id':'nope'}}");
    results = s_exec_get (e, "results", &whole);
    ok (json_array_size (ev) == 0 && json_array_size (results) == 3
            && strcmp (json_string_value (json_object_get (json_array_get (results, 1), "text")),
                       "other")
                   == 0,
        "unknown display_id: no event, no change");
    json_decref (whole);

    /* an update keeps is_main_result of what it replaces */
    s_iopub (e, ev, "execute_result",
             "{'execution_count':2,'data':{'text/plain':'m'},'transient':{'display_id':'main'}}");
    json_array_clear (ev);
    s_iopub (e, ev, "update_display_data",
             "{'data':{'text/plain':'m2'},'transient':{'display_id':'main'}}");
    ok (s_same (ev,
                "[{'event':'display_update','data':{'display_id':'main','result':"
                "{'text':'m2','formats':['text'],'is_main_result':true,'display_id':'main'}}}]"),
        "updating the main result keeps is_main_result true");
    json_decref (ev);
    execution_destroy (&e);
}

/* ---- clear_output ------------------------------------------------------- */

static void
test_clear_output (void)
{
    execution_t *e = execution_new (1 << 20, NULL);
    json_t *ev = json_array ();
    s_iopub (e, NULL, "stream", "{'name':'stdout','text':'a'}");
    s_iopub (e, NULL, "stream", "{'name':'stderr','text':'b'}");
    s_iopub (e, NULL, "display_data", "{'data':{'text/plain':'p'},'transient':{'display_id':'x'}}");
    s_iopub (e, ev, "clear_output", "{'wait':false}");
    ok (s_same (ev, "[{'event':'clear_output','data':{'wait':false}}]"), "clear_output event");
    ok (s_exec_is (e, EMPTY_EXEC), "wait=false clears results and both logs at once");
    json_array_clear (ev);
    s_iopub (e, ev, "update_display_data",
             "{'data':{'text/plain':'q'},'transient':{'display_id':'x'}}");
    ok (json_array_size (ev) == 0 && s_exec_is (e, EMPTY_EXEC),
        "a cleared display can no longer be updated");
    s_iopub (e, NULL, "stream", "{'name':'stdout','text':'c'}");
    s_iopub (e, NULL, "clear_output", "{}");
    ok (s_exec_is (e, EMPTY_EXEC), "absent wait means false");
    execution_destroy (&e);

    /* wait=true: the old output stays until new output arrives */
    e = execution_new (1 << 20, NULL);
    json_array_clear (ev);
    s_iopub (e, NULL, "display_data",
             "{'data':{'text/plain':'10%'},'transient':{'display_id':'p'}}");
    s_iopub (e, NULL, "stream", "{'name':'stdout','text':'a'}");
    s_iopub (e, ev, "clear_output", "{'wait':true}");
    ok (s_same (ev, "[{'event':'clear_output','data':{'wait':true}}]"),
        "clear_output event says wait");
    ok (s_exec_is (e, "{'results':[{'text':'10%','formats':['text'],'is_main_result':false,"
                      "'display_id':'p'}],'logs':{'stdout':['a'],'stderr':[]},'error':null,"
                      "'execution_count':null,'truncated':false}"),
        "wait=true keeps the output for now");
    s_iopub (e, NULL, "update_display_data",
             "{'data':{'text/plain':'20%'},'transient':{'display_id':'p'}}");
    s_iopub (e, NULL, "error", "{'ename':'E','evalue':'v','traceback':[]}");
    s_iopub (e, NULL, "stream", "{'name':'stdout','text':7}");
    s_iopub (e, NULL, "status", "{'execution_state':'busy'}");
    json_t *whole;
    json_t *results = s_exec_get (e, "results", &whole);
    ok (json_array_size (results) == 1
            && strcmp (json_string_value (json_object_get (json_array_get (results, 0), "text")),
                       "20%")
                   == 0,
        "update_display_data, error, status and malformed output do not fire the pending clear");
    json_decref (whole);
    s_iopub (e, NULL, "stream", "{'name':'stderr','text':'b'}");
    ok (s_exec_is (e, "{'results':[],'logs':{'stdout':[],'stderr':['b']},'error':{'name':'E',"
                      "'value':'v','traceback':[]},'execution_count':null,'truncated':false}"),
        "the next stream clears first, then is kept; the error is not cleared");
    s_iopub (e, NULL, "clear_output", "{'wait':true}");
    s_iopub (e, NULL, "display_data", "{'data':{'text/plain':'30%'}}");
    results = s_exec_get (e, "results", &whole);
    json_t *logs = json_object_get (whole, "logs");
    ok (json_array_size (results) == 1 && json_array_size (json_object_get (logs, "stderr")) == 0,
        "a display fires the pending clear too");
    json_decref (whole);
    s_iopub (e, NULL, "clear_output", "{'wait':true}");
    s_iopub (e, NULL, "execute_result", "{'execution_count':3,'data':{'text/plain':'r'}}");
    results = s_exec_get (e, "results", &whole);
    ok (json_array_size (results) == 1
            && json_is_true (json_object_get (json_array_get (results, 0), "is_main_result")),
        "so does an execute_result");
    json_decref (whole);
    s_iopub (e, NULL, "clear_output", "{'wait':true}");
    s_iopub (e, NULL, "status", "{'execution_state':'idle'}");
    s_shell (e, NULL, "{'status':'ok','execution_count':3}");
    results = s_exec_get (e, "results", &whole);
    ok (execution_done (e) && json_array_size (results) == 1,
        "a clear still pending when the run ends leaves the output");
    json_decref (whole);
    json_decref (ev);
    execution_destroy (&e);
}

/* ---- errors ------------------------------------------------------------- */

#define ZDE_TB                                                                                     \
    "['\\u001b[0;31m---------------------------------------------------------------------------"   \
    "\\u001b[0m','\\u001b[0;31mZeroDivisionError\\u001b[0m                         Traceback "     \
    "(most recent call last)','\\u001b[0;31mZeroDivisionError\\u001b[0m: division by zero']"
#define ZDE_ERROR "{'name':'ZeroDivisionError','value':'division by zero','traceback':" ZDE_TB "}"

static void
test_errors (void)
{
    /* 1/0 as IPython reports it: iopub error, then the reply repeats it */
    execution_t *e = execution_new (1 << 20, NULL);
    json_t *ev = json_array ();
    s_iopub (e, ev, "status", "{'execution_state':'busy'}");
    s_iopub (e, ev, "execute_input", "{'code':'1/0','execution_count':2}");
    s_iopub (e, ev, "error",
             "{'ename':'ZeroDivisionError','evalue':'division by zero','traceback':" ZDE_TB "}");
    s_iopub (e, ev, "status", "{'execution_state':'idle'}");
    s_shell (e, ev,
             "{'status':'error','execution_count':2,'ename':'ZeroDivisionError',"
             "'evalue':'from the reply','traceback':[],'engine_info':{}}");
    ok (execution_done (e), "error run finishes");
    ok (s_same (ev, "[{'event':'execution_count','data':{'execution_count':2}},"
                    "{'event':'error','data':" ZDE_ERROR "}]"),
        "one error event, traceback with ANSI codes as sent");
    ok (s_exec_is (e, "{'results':[],'logs':{'stdout':[],'stderr':[]},'error':" ZDE_ERROR
                      ",'execution_count':2,'truncated':false}"),
        "the iopub error is the Execution's error, not the reply's copy");
    json_decref (ev);
    execution_destroy (&e);

    /* the reply overtakes the iopub error: still one event, from iopub */
    e = execution_new (1 << 20, NULL);
    ev = json_array ();
    s_iopub (e, ev, "execute_input", "{'code':'1/0','execution_count':2}");
    size_t n1 = s_shell (e, ev,
                         "{'status':'error','execution_count':2,'ename':'ZeroDivisionError',"
                         "'evalue':'from the reply','traceback':[]}");
    size_t n2 = s_iopub (
        e, ev, "error",
        "{'ename':'ZeroDivisionError','evalue':'division by zero','traceback':" ZDE_TB "}");
    size_t n3 = s_iopub (e, ev, "status", "{'execution_state':'idle'}");
    ok (n1 == 0 && n2 == 1 && n3 == 0, "reply first: its error waits, the iopub error is emitted");
    ok (s_exec_is (e, "{'results':[],'logs':{'stdout':[],'stderr':[]},'error':" ZDE_ERROR
                      ",'execution_count':2,'truncated':false}"),
        "reply first: the iopub error wins");
    json_decref (ev);
    execution_destroy (&e);

    /* a kernel that reports the error only in the reply */
    e = execution_new (1 << 20, NULL);
    ev = json_array ();
    s_shell (e, ev, "{'status':'error','ename':'SyntaxError','evalue':'bad','traceback':['x',1]}");
    ok (json_array_size (ev) == 0, "reply error held while iopub may still report one");
    s_iopub (e, ev, "status", "{'execution_state':'idle'}");
    ok (s_same (ev, "[{'event':'error','data':{'name':'SyntaxError','value':'bad',"
                    "'traceback':['x']}}]"),
        "at idle the reply's error is used (non-string traceback lines dropped)");
    json_decref (ev);
    execution_destroy (&e);

    e = execution_new (1 << 20, NULL);
    ev = json_array ();
    s_iopub (e, ev, "status", "{'execution_state':'idle'}");
    s_shell (e, ev, "{'status':'error','ename':'SyntaxError','evalue':'bad','traceback':[]}");
    ok (s_same (ev, "[{'event':'error','data':{'name':'SyntaxError','value':'bad',"
                    "'traceback':[]}}]"),
        "reply error after idle is used at once");
    s_shell (e, ev, "{'status':'error','ename':'Second','evalue':'reply','traceback':[]}");
    s_iopub (e, ev, "error", "{'ename':'Late','evalue':'x','traceback':[]}");
    ok (json_array_size (ev) == 1, "a second reply and a late error change nothing");
    json_decref (ev);
    execution_destroy (&e);

    /* aborted */
    e = execution_new (1 << 20, NULL);
    ev = json_array ();
    s_iopub (e, ev, "status", "{'execution_state':'busy'}");
    s_shell (e, ev, "{'status':'aborted'}");
    s_iopub (e, ev, "status", "{'execution_state':'idle'}");
    json_t *whole;
    json_t *error = s_exec_get (e, "error", &whole);
    ok (execution_done (e) && json_array_size (ev) == 1
            && json_equal (json_object_get (json_array_get (ev, 0), "data"), error),
        "aborted: done, one error event");
    ok (strcmp (json_string_value (json_object_get (error, "name")), "ExecutionAborted") == 0
            && json_string_length (json_object_get (error, "value")) > 0
            && s_same (json_object_get (error, "traceback"), "[]"),
        "aborted: error ExecutionAborted with a message and an empty traceback");
    json_decref (whole);
    json_decref (ev);
    execution_destroy (&e);

    /* malformed tracebacks */
    e = execution_new (1 << 20, NULL);
    ev = json_array ();
    s_iopub (e, ev, "error",
             "{'ename':'ValueError','evalue':'bad','traceback':[1,'one',null,{'a':1},'two',[]]}");
    ok (s_same (ev, "[{'event':'error','data':{'name':'ValueError','value':'bad',"
                    "'traceback':['one','two']}}]"),
        "non-string traceback lines dropped");
    execution_destroy (&e);
    e = execution_new (1 << 20, NULL);
    json_array_clear (ev);
    s_iopub (e, ev, "error", "{'ename':'ValueError','evalue':'bad','traceback':'not a list'}");
    ok (s_same (ev, "[{'event':'error','data':{'name':'ValueError','value':'bad',"
                    "'traceback':[]}}]"),
        "a traceback that is not an array becomes []");
    json_decref (ev);
    execution_destroy (&e);
}

static void
test_fail (void)
{
    execution_t *e = execution_new (1 << 20, NULL);
    json_t *ev = execution_fail (e, "TimeoutError", "execution timed out after 100 ms", false);
    ok (s_same (ev, "{'event':'error','data':{'name':'TimeoutError',"
                    "'value':'execution timed out after 100 ms','traceback':[]}}"),
        "fail: error event returned");
    json_decref (ev);
    ok (s_iopub (e, NULL, "error",
                 "{'ename':'KeyboardInterrupt','evalue':'','traceback':['interrupted']}")
            == 0,
        "the interrupt's KeyboardInterrupt after a timeout: no event");
    s_iopub (e, NULL, "status", "{'execution_state':'idle'}");
    s_shell (e, NULL, "{'status':'error','ename':'KeyboardInterrupt','evalue':'','traceback':[]}");
    ok (s_exec_is (e, "{'results':[],'logs':{'stdout':[],'stderr':[]},'error':{'name':"
                      "'TimeoutError','value':'execution timed out after 100 ms','traceback':[]},"
                      "'execution_count':null,'truncated':false}"),
        "the TimeoutError stays the Execution's error");
    execution_destroy (&e);

    e = execution_new (1 << 20, NULL);
    s_iopub (e, NULL, "error", "{'ename':'NameError','evalue':'x','traceback':[]}");
    ok (execution_fail (e, "KernelDied", "the kernel died", false) == NULL,
        "fail without force keeps the kernel's error (NULL)");
    ev = execution_fail (e, "KernelDied", "the kernel died", true);
    ok (ev
            && s_exec_is (e, "{'results':[],'logs':{'stdout':[],'stderr':[]},'error':{'name':"
                             "'KernelDied','value':'the kernel died','traceback':[]},"
                             "'execution_count':null,'truncated':false}"),
        "fail with force replaces it");
    json_decref (ev);
    ev = execution_fail (e, "Bad", "\xff\xfeok", true);
    ok (ev
            && s_same (json_object_get (ev, "data"),
                       "{'name':'Bad','value':'\\ufffd\\ufffdok','traceback':[]}"),
        "invalid UTF-8 in a failure message is repaired");
    json_decref (ev);
    ok (execution_fail (NULL, "X", "y", true) == NULL, "fail on NULL: NULL");
    execution_destroy (&e);
}

/* ---- hostile content ---------------------------------------------------- */

static void
test_malformed (void)
{
    static const char *const cases[][3] = {
        { "iopub", "stream", "{'name':'stdout','text':5}" },
        { "iopub", "stream", "{'name':'stdout','text':['a','b']}" },
        { "iopub", "stream", "{'name':'stdout','text':null}" },
        { "iopub", "stream", "{'name':'stdlog','text':'a'}" },
        { "iopub", "stream", "{'name':7,'text':'a'}" },
        { "iopub", "stream", "{'text':'a'}" },
        { "iopub", "display_data", "{'data':'x'}" },
        { "iopub", "display_data", "{'data':[{'text/plain':'x'}]}" },
        { "iopub", "display_data", "{}" },
        { "iopub", "execute_result", "{'execution_count':1,'data':null}" },
        { "iopub", "update_display_data", "{'data':{'text/plain':'x'}}" },
        { "iopub", "update_display_data",
          "{'data':{'text/plain':'x'},'transient':{'display_id':5}}" },
        { "iopub", "update_display_data", "{'data':{'text/plain':'x'},'transient':'d'}" },
        { "iopub", "update_display_data", "{'data':7,'transient':{'display_id':'d'}}" },
        { "iopub", "clear_output", "{'wait':'yes'}" },
        { "iopub", "clear_output", "{'wait':1}" },
        { "iopub", "error", "{'ename':5,'evalue':'x','traceback':[]}" },
        { "iopub", "error", "{'ename':'E','traceback':[]}" },
        { "iopub", "error", "{'ename':'E','evalue':{'v':1},'traceback':[]}" },
        { "iopub", "execute_input", "{'execution_count':'3'}" },
        { "iopub", "execute_input", "{'execution_count':-1}" },
        { "iopub", "execute_input", "{'execution_count':1.5}" },
        { "iopub", "execute_input", "{}" },
        { "iopub", "status", "{'execution_state':5}" },
        { "iopub", "status", "{'execution_state':'IDLE'}" },
        { "iopub", "comm_open", "{'comm_id':'c','target_name':'t','data':{}}" },
        { "iopub", "stream", "['stdout','a']" },
        { "iopub", "stream", "'text'" },
        { "iopub", "status", "null" },
        { "shell", "execute_reply", "[]" },
        { "shell", "stream", "{'name':'stdout','text':'a'}" },
        { "iopub", "execute_reply", "{'status':'ok','execution_count':1}" },
        { "control", "execute_reply", "{'status':'ok','execution_count':1}" },
        { "stdin", "status", "{'execution_state':'idle'}" },
    };
    execution_t *e = execution_new (1 << 20, NULL);
    size_t events = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        events += s_feed (e, NULL, cases[i][0], cases[i][1], cases[i][2]);
    json_t *c = s_j ("{'execution_state':'idle'}");
    json_t *ev[] = {
        execution_apply (e, "iopub", "status", NULL),
        execution_apply (e, "iopub", NULL, c),
        execution_apply (e, NULL, "status", c),
        execution_apply (NULL, "iopub", "status", c),
    };
    for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++) {
        events += json_is_array (ev[i]) ? json_array_size (ev[i]) : 1000;
        json_decref (ev[i]);
    }
    json_decref (c);
    ok (events == 0, "%zu malformed or misplaced messages: no events",
        sizeof cases / sizeof cases[0] + 4);
    ok (s_exec_is (e, EMPTY_EXEC), "malformed messages change nothing");
    ok (!execution_done (e), "and finish nothing");
    ok (!execution_done (NULL), "execution_done (NULL) is false");
    ok (execution_to_json (NULL) == NULL, "execution_to_json (NULL) is NULL");

    /* malformed pieces of an otherwise good message are dropped */
    json_t *log = json_array ();
    s_iopub (e, log, "execute_result",
             "{'execution_count':'one','data':{'text/plain':'ok','text/html':5},"
             "'transient':{'display_id':['x']}}");
    ok (s_same (log, "[{'event':'result','data':{'text':'ok','formats':['text'],"
                     "'is_main_result':true,'display_id':null}}]"),
        "bad count, bad display_id and a bad MIME value are ignored, the rest kept");
    json_decref (log);
    execution_destroy (&e);

    /* embedded NUL kept as sent */
    e = execution_new (1 << 20, NULL);
    s_iopub (e, NULL, "stream", "{'name':'stdout','text':'a\\u0000b'}");
    ok (s_exec_is (e, "{'results':[],'logs':{'stdout':['a\\u0000b'],'stderr':[]},'error':null,"
                      "'execution_count':null,'truncated':false}"),
        "NUL inside stream text kept");
    execution_destroy (&e);

    /* deep nesting in a JSON display */
    e = execution_new (1 << 20, NULL);
    size_t depth = 2000;
    char *deep = malloc (depth * 2 + 64);
    strcpy (deep, "{'data':{'application/json':");
    size_t o = strlen (deep);
    memset (deep + o, '[', depth);
    memset (deep + o + depth, ']', depth);
    strcpy (deep + o + 2 * depth, "}}");
    ok (s_iopub (e, NULL, "display_data", deep) == 1, "JSON nested %zu deep is kept", depth);
    json_t *whole;
    s_exec_get (e, "results", &whole);
    char *dumped = jsonv_dumps (whole);
    ok (dumped && strlen (dumped) > 2 * depth, "and serialises");
    free (dumped);
    json_decref (whole);
    execution_destroy (&e);
    e = execution_new (depth, NULL);
    ok (s_iopub (e, NULL, "display_data", deep) == 0, "but counts its serialised size");
    free (deep);
    execution_destroy (&e);
}

/* ---- bounds ------------------------------------------------------------- */

static bool
s_truncated (const execution_t *e)
{
    json_t *whole;
    json_t *truncated = s_exec_get (e, "truncated", &whole);
    bool t = json_is_true (truncated);
    json_decref (whole);
    return t;
}

static void
test_truncation (void)
{
    execution_t *e = execution_new (100, NULL);
    json_t *ev = json_array ();
    s_iopub (e, ev, "execute_input", "{'code':'x','execution_count':7}");
    for (int i = 0; i < 9; i++)
        s_iopub (e, ev, "stream", "{'name':'stdout','text':'0123456789'}");
    ok (!s_truncated (e), "90 of 100 bytes: not truncated");
    json_array_clear (ev);
    s_iopub (e, ev, "stream", "{'name':'stdout','text':'abcdefghijklmnopqrst'}");
    ok (s_same (ev, "[{'event':'stdout','data':{'text':'abcdefghij'}}]"),
        "a stream message past the limit keeps what fits");
    ok (s_truncated (e), "and marks the execution truncated");
    json_array_clear (ev);
    size_t n = s_iopub (e, ev, "stream", "{'name':'stderr','text':'x'}");
    n += s_iopub (e, ev, "display_data", "{'data':{'text/plain':''}}");
    n += s_iopub (e, ev, "execute_result", "{'execution_count':7,'data':{'text/plain':'r'}}");
    ok (n == 0, "further output is dropped without events");
    n = s_iopub (e, ev, "error", "{'ename':'E','evalue':'v','traceback':['t']}");
    s_iopub (e, ev, "status", "{'execution_state':'idle'}");
    s_shell (e, ev, "{'status':'error','execution_count':7,'ename':'E','evalue':'v'}");
    ok (n == 1 && execution_done (e), "error, idle and reply still processed: the run finishes");
    json_t *whole;
    json_t *out = json_object_get (s_exec_get (e, "logs", &whole), "stdout");
    ok (json_array_size (out) == 10 && json_array_size (json_object_get (whole, "results")) == 0
            && json_is_true (json_object_get (whole, "truncated"))
            && json_integer_value (json_object_get (whole, "execution_count")) == 7
            && json_is_object (json_object_get (whole, "error")),
        "Execution: 10 stdout entries, no results, error, count and truncated true");
    json_decref (whole);
    json_decref (ev);
    execution_destroy (&e);

    /* cut on a character boundary */
    e = execution_new (5, NULL);
    s_iopub (e, NULL, "stream", "{'name':'stdout','text':'aaaa\\u00e9'}");
    ok (s_exec_is (e, "{'results':[],'logs':{'stdout':['aaaa'],'stderr':[]},'error':null,"
                      "'execution_count':null,'truncated':true}"),
        "a cut never splits a UTF-8 character");
    execution_destroy (&e);

    /* exact accounting: string lengths plus serialised JSON */
    e = execution_new (12, NULL);
    ok (s_iopub (e, NULL, "display_data",
                 "{'data':{'text/plain':'abc','application/json':{'a':1}},"
                 "'transient':{'display_id':'d1'}}")
            == 1,
        "3 (text) + 7 ({\"a\":1}) + 2 (display_id) bytes fit in 12");
    ok (s_iopub (e, NULL, "stream", "{'name':'stdout','text':''}") == 1 && !s_truncated (e),
        "at the limit an empty text still fits");
    ok (s_iopub (e, NULL, "stream", "{'name':'stdout','text':'x'}") == 0 && s_truncated (e),
        "one byte more is dropped and truncates");
    s_iopub (e, NULL, "clear_output", "{'wait':false}");
    ok (s_exec_is (e, EMPTY_EXEC), "a clear empties and resets truncated");
    ok (s_iopub (e, NULL, "stream", "{'name':'stdout','text':'x'}") == 1,
        "after a clear output is accepted again");
    execution_destroy (&e);

    /* a pending clear also lifts truncation when it fires */
    e = execution_new (4, NULL);
    s_iopub (e, NULL, "stream", "{'name':'stdout','text':'12345'}");
    s_iopub (e, NULL, "clear_output", "{'wait':true}");
    ok (s_truncated (e), "truncated until the pending clear fires");
    ok (s_iopub (e, NULL, "stream", "{'name':'stdout','text':'ab'}") == 1 && !s_truncated (e)
            && s_exec_is (e, "{'results':[],'logs':{'stdout':['ab'],'stderr':[]},'error':null,"
                             "'execution_count':null,'truncated':false}"),
        "the next output clears, then fits");
    execution_destroy (&e);

    /* an update may not grow past the limit */
    e = execution_new (20, NULL);
    s_iopub (e, NULL, "display_data",
             "{'data':{'text/plain':'0123456789'},'transient':{'display_id':'d1'}}");
    ok (s_iopub (e, NULL, "update_display_data",
                 "{'data':{'text/plain':'012345678901234567'},'transient':{'display_id':'d1'}}")
            == 1,
        "an update to exactly the limit is applied");
    ok (s_iopub (e, NULL, "update_display_data",
                 "{'data':{'text/plain':'0123456789012345678'},'transient':{'display_id':'d1'}}")
                == 0
            && s_truncated (e),
        "an update past the limit is dropped and truncates");
    json_t *results = s_exec_get (e, "results", &whole);
    ok (strcmp (json_string_value (json_object_get (json_array_get (results, 0), "text")),
                "012345678901234567")
            == 0,
        "the result keeps its last accepted bundle");
    json_decref (whole);
    execution_destroy (&e);

    /* one huge image does not evict what came before */
    e = execution_new (4096, NULL);
    s_iopub (e, NULL, "display_data", "{'data':{'text/plain':'small'}}");
    json_t *big = json_object ();
    char *png = malloc ((1 << 20) + 1);
    memset (png, 'A', 1 << 20);
    png[1 << 20] = '\0';
    json_object_set_new (big, "data", json_pack ("{s:s}", "image/png", png));
    free (png);
    json_t *got = execution_apply (e, "iopub", "display_data", big);
    json_decref (big);
    results = s_exec_get (e, "results", &whole);
    ok (json_array_size (got) == 0 && json_array_size (results) == 1
            && json_is_true (json_object_get (whole, "truncated")),
        "a 1 MiB image past the limit is dropped whole; earlier results stay");
    json_decref (got);
    json_decref (whole);
    execution_destroy (&e);
}

static void
test_counts (void)
{
    execution_t *e = execution_new ((size_t)1 << 30, NULL);
    json_t *c = s_j ("{'data':{'text/plain':'x'},'metadata':{}}");
    size_t events = 0;
    for (int i = 0; i < EXECUTION_MAX_RESULTS + 5; i++) {
        json_t *ev = execution_apply (e, "iopub", "display_data", c);
        events += json_array_size (ev);
        json_decref (ev);
    }
    json_decref (c);
    json_t *whole;
    json_t *results = s_exec_get (e, "results", &whole);
    ok (json_array_size (results) == EXECUTION_MAX_RESULTS && events == EXECUTION_MAX_RESULTS
            && json_is_true (json_object_get (whole, "truncated")),
        "%d displays: %d results kept, truncated", EXECUTION_MAX_RESULTS + 5,
        EXECUTION_MAX_RESULTS);
    json_decref (whole);
    execution_destroy (&e);

    e = execution_new ((size_t)1 << 30, NULL);
    json_t *out = s_j ("{'name':'stdout','text':'y'}");
    json_t *err = s_j ("{'name':'stderr','text':'z'}");
    events = 0;
    for (int i = 0; i < EXECUTION_MAX_LOG_ENTRIES + 5; i++) {
        json_t *ev = execution_apply (e, "iopub", "stream", i % 2 ? err : out);
        events += json_array_size (ev);
        json_decref (ev);
    }
    json_decref (out);
    json_decref (err);
    json_t *logs = s_exec_get (e, "logs", &whole);
    ok (json_array_size (json_object_get (logs, "stdout"))
                    + json_array_size (json_object_get (logs, "stderr"))
                == EXECUTION_MAX_LOG_ENTRIES
            && events == EXECUTION_MAX_LOG_ENTRIES
            && json_is_true (json_object_get (whole, "truncated")),
        "%d stream messages: %d log entries kept, truncated", EXECUTION_MAX_LOG_ENTRIES + 5,
        EXECUTION_MAX_LOG_ENTRIES);
    json_decref (whole);
    execution_destroy (&e);

    /* the error has its own budget */
    e = execution_new (16, NULL);
    json_t *lines = json_array ();
    for (int i = 0; i < EXECUTION_MAX_TRACEBACK + 10; i++)
        json_array_append_new (lines, json_string ("line"));
    char *value = malloc (2u << 20);
    memset (value, 'v', (2u << 20) - 1);
    value[(2u << 20) - 1] = '\0';
    json_t *content = json_pack ("{s:s, s:s, s:o}", "ename", "MemoryError", "evalue", value,
                                 "traceback", lines);
    free (value);
    json_t *ev = execution_apply (e, "iopub", "error", content);
    json_decref (content);
    json_t *error = s_exec_get (e, "error", &whole);
    ok (json_array_size (ev) == 1
            && json_string_length (json_object_get (error, "value"))
                   == EXECUTION_MAX_ERROR_BYTES - strlen ("MemoryError")
            && json_array_size (json_object_get (error, "traceback")) == 0
            && json_is_true (json_object_get (whole, "truncated")),
        "a 2 MiB error value is cut to the error budget; truncated");
    json_decref (ev);
    json_decref (whole);
    execution_destroy (&e);

    e = execution_new (16, NULL);
    lines = json_array ();
    for (int i = 0; i < EXECUTION_MAX_TRACEBACK + 10; i++)
        json_array_append_new (lines, json_string (""));
    content = json_pack ("{s:s, s:s, s:o}", "ename", "E", "evalue", "v", "traceback", lines);
    ev = execution_apply (e, "iopub", "error", content);
    json_decref (content);
    error = s_exec_get (e, "error", &whole);
    ok (json_array_size (json_object_get (error, "traceback")) == EXECUTION_MAX_TRACEBACK
            && json_is_true (json_object_get (whole, "truncated")),
        "at most %d traceback lines", EXECUTION_MAX_TRACEBACK);
    json_decref (ev);
    json_decref (whole);
    execution_destroy (&e);
}

int
main (void)
{
    test_print_then_expression ();
    test_events_are_copies ();
    test_bundle ();
    test_display_update ();
    test_clear_output ();
    test_errors ();
    test_fail ();
    test_malformed ();
    test_truncation ();
    test_counts ();
    return tap_done ();
}
