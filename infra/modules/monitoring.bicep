// Azure Monitor watches the detector from outside: a path that works even when the detector cannot
// send anything itself (a broken deployment, an expired secret, a disabled app).
// Three scheduled query rules over the Function App's Application Insights `traces`, and one action group
// whose receivers are parameters. The README's "Self-monitoring" section explains both paths.
//
// What the rules read: the daily run logs `detector run summary {json}` after every completed run and
// `detector run failed {json}` (with `stage` and `code`) after a failed one, each JSON object on one line
// (detector/health.py SUMMARY_PREFIX, FAILURE_PREFIX, log_message). The queries find them with
// `startswith` and parse the JSON after the prefix. Why not structured custom dimensions: the Functions
// Python worker forwards a log record's formatted message to `traces.message` and not its `extra` fields;
// the worker sends `extra` only when it exports through OpenTelemetry, which Microsoft's "Use
// OpenTelemetry with Azure Functions" page marks preview, supports for HTTP and Azure SDK-based triggers
// only (this app has timers only) and needs configure_azure_monitor() in the app's code. So no
// OpenTelemetry: the classic path, and messages that carry their own structure.

@description('Azure region of the alert rules.')
param location string

@description('Short prefix for resource names.')
param namePrefix string

@description('Resource id of the Function App\'s Application Insights component (the rules\' scope).')
param appInsightsId string

@description('Hours without a successful run before the alert fires (frequency + grace: 24 + 2).')
@minValue(2)
@maxValue(48)
param silenceHours int = 26

@description('Email addresses of the on-call receivers (may be empty).')
param emailAddresses array = []

@description('Webhook receivers (e.g. an on-call tool), one URL per line (secret: the URL may carry a key).')
@secure()
param webhookUrls string = ''

var webhooks = filter(split(replace(webhookUrls, '\r', ''), '\n'), url => !empty(trim(url)))

// {silenceHours} is replaced below. A run whose summary says "partial" (an alert it could not record)
// does not count as successful: it keeps the watermark, and the next run retries.
var noRunQueryTemplate = '''
traces
| where timestamp > ago({silenceHours}h)
| where message startswith "detector run summary "
| extend Summary = parse_json(substring(message, strlen("detector run summary ")))
| where tostring(Summary.status) == "succeeded"
| summarize SuccessfulRuns = count()
'''
var failedRunQuery = '''
traces
| where message startswith "detector run failed "
| extend Failure = parse_json(substring(message, strlen("detector run failed ")))
| project timestamp, Stage = tostring(Failure.stage), Code = tostring(Failure.code), message
'''
// A completed run whose allowlist went over its budget: its broadest entries were set aside (the run fails
// closed and succeeds), a sign of a careless or hostile edit of the allowlist table that only
// `detector status` would show otherwise.
var allowlistOverBudgetQuery = '''
traces
| where message startswith "detector run summary "
| extend Summary = parse_json(substring(message, strlen("detector run summary ")))
| where array_length(Summary.allowlist_budget.set_aside) > 0
| project timestamp, SetAside = strcat_array(Summary.allowlist_budget.set_aside, ", "), message
'''

resource onCall 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-detector-oncall'
  location: 'global'
  properties: {
    groupShortName: 'detectoroc'
    enabled: true
    emailReceivers: [for (address, i) in emailAddresses: {
      name: 'email-${i + 1}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
    webhookReceivers: [for (url, i) in webhooks: {
      name: 'webhook-${i + 1}'
      serviceUri: url
      useCommonAlertSchema: true
    }]
  }
}

resource noSuccessfulRun 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-detector-no-successful-run'
  location: location
  kind: 'LogAlert'
  properties: {
    displayName: 'Run Command detector: no successful run for ${silenceHours} hours'
    description: 'The detector has not completed a run for longer than its frequency plus the grace period: Run Commands are not being checked. See the README, Self-monitoring.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    criteria: {
      allOf: [
        {
          query: replace(noRunQueryTemplate, '{silenceHours}', string(silenceHours))
          timeAggregation: 'Total'
          metricMeasureColumn: 'SuccessfulRuns'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        onCall.id
      ]
    }
  }
}

resource failedRun 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-detector-run-failed'
  location: location
  kind: 'LogAlert'
  properties: {
    displayName: 'Run Command detector: a run failed'
    description: 'A daily run of the detector failed (the stage and error code are dimensions). See the README, Self-monitoring.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: failedRunQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'Stage'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'Code'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        onCall.id
      ]
    }
  }
}

resource allowlistOverBudget 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-detector-allowlist-over-budget'
  location: location
  kind: 'LogAlert'
  properties: {
    displayName: 'Run Command detector: allowlist over its budget'
    description: 'A run found the allowlist entries in force together broader than their budget (2% of the breadth corpus) and set the broadest aside: review the allowlist table for a careless or hostile edit. See the README, Allowlist.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: allowlistOverBudgetQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        onCall.id
      ]
    }
  }
}

output actionGroupId string = onCall.id
output ruleIds array = [
  noSuccessfulRun.id
  failedRun.id
  allowlistOverBudget.id
]
