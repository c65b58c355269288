// Run Command / UEBA detector: a timer-triggered Python Function App on Flex Consumption.
// Managed identity everywhere, no keys: storage with shared-key access off, Key Vault (RBAC) for the
// webhook URLs, and only the roles the detector needs.
targetScope = 'resourceGroup'

@description('Azure region of the detector.')
param location string = resourceGroup().location

@description('Short prefix for resource names (3-11 lowercase letters or digits).')
@minLength(3)
@maxLength(11)
param namePrefix string

@description('Resource id of the Microsoft Sentinel Log Analytics workspace (it may live in another resource group or subscription).')
param sentinelWorkspaceResourceId string

@description('Teams Workflows webhook URLs, one per line (secret: stored in Key Vault).')
@secure()
param teamsWebhookUrls string = ''

@description('Logic App HTTP trigger URLs, one per line (secret: stored in Key Vault).')
@secure()
param logicAppWebhookUrls string = ''

@description('NCRONTAB schedule of the daily run (UTC).')
param schedule string = '0 0 6 * * *'

@description('NCRONTAB schedule of the outbox re-send timer.')
param redeliverSchedule string = '0 */15 * * * *'

@description('Query period in hours (the rule: 48).')
param periodHours int = 48

@description('Hours between scheduled runs (the rule: 24).')
param frequencyHours int = 24

@description('How far back a run widens its window after missed runs, in days.')
param maxCatchupDays int = 14

@description('More alerts than this in one delivery make one Teams digest card.')
param digestThreshold int = 50

@description('Object id of a person or group allowed to manage the webhook secrets (optional).')
param secretsAdminObjectId string = ''

var suffix = uniqueString(resourceGroup().id, namePrefix)
var storageName = toLower(take('${namePrefix}st${suffix}', 24))
var deploymentContainer = 'deployments'
var tables = [
  'detectorallowlist'
  'detectoralerts'
  'detectorruns'
]
var roles = {
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}
var sentinelParts = split(sentinelWorkspaceResourceId, '/')

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches its storage over the public endpoint; shared keys are off, so only Entra identities with data roles get in.
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: public endpoint, identity-only access, no anonymous blob access.
  // checkov:skip=CKV_AZURE_43: the name is built by take(toLower(...), 24) from a validated prefix and uniqueString(): valid by construction, not a literal the check can read.
  name: storageName
  location: location
  sku: {
    name: 'Standard_GZRS'
  }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deployments 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource detectorTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for table in tables: {
  parent: tableService
  name: table
}]

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-log-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${namePrefix}-appi-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_189: Flex Consumption without VNet integration resolves Key Vault references over the public endpoint; access is RBAC-only (Key Vault Secrets User for the app).
  name: take('${namePrefix}-kv-${suffix}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // checkov:skip=CKV_AZURE_109: Flex Consumption apps without VNet integration reach Key Vault over the public endpoint; access is RBAC-only.
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource teamsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'teams-webhook-urls'
  properties: {
    // checkov:skip=CKV_AZURE_41: webhook URLs are rotated by the flow owner, not on a timer; an expiry would silently stop delivery.
    value: teamsWebhookUrls
    contentType: 'text/plain; one URL per line'
  }
}

resource logicAppSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'logicapp-webhook-urls'
  properties: {
    // checkov:skip=CKV_AZURE_41: webhook URLs are rotated by the flow owner, not on a timer; an expiry would silently stop delivery.
    value: logicAppWebhookUrls
    contentType: 'text/plain; one URL per line'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: a once-a-day batch job; a zone outage delays a run and the watermark catches the window up, so zone redundancy buys nothing here.
  name: '${namePrefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_78: Flex Consumption rejects siteConfig.ftpsState; FTP and SCM basic auth are turned off by the basicPublishingCredentialsPolicies below.
  // checkov:skip=CKV_AZURE_222: the app has timer triggers only and no HTTP functions; the public endpoint serves only Entra-protected deployment, and disabling it would block publishing from outside a VNet.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; a daily timer needs no always-ready instances.
  // checkov:skip=CKV_AZURE_213: no HTTP endpoint to probe: the app has timer triggers only, and failed runs are recorded by the platform.
  name: '${namePrefix}-func-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: true
    clientCertMode: 'Required'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: insights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD'
        }
        {
          name: 'DETECTOR_WORKSPACE_ID'
          value: sentinelAccess.outputs.customerId
        }
        {
          name: 'DETECTOR_TABLE_ENDPOINT'
          value: storage.properties.primaryEndpoints.table
        }
        {
          name: 'DETECTOR_TEAMS_WEBHOOK_URLS'
          value: '@Microsoft.KeyVault(SecretUri=${teamsSecret.properties.secretUri})'
        }
        {
          name: 'DETECTOR_LOGICAPP_WEBHOOK_URLS'
          value: '@Microsoft.KeyVault(SecretUri=${logicAppSecret.properties.secretUri})'
        }
        {
          name: 'DETECTOR_SCHEDULE'
          value: schedule
        }
        {
          name: 'DETECTOR_REDELIVER_SCHEDULE'
          value: redeliverSchedule
        }
        {
          name: 'DETECTOR_PERIOD_HOURS'
          value: string(periodHours)
        }
        {
          name: 'DETECTOR_FREQUENCY_HOURS'
          value: string(frequencyHours)
        }
        {
          name: 'DETECTOR_MAX_CATCHUP_DAYS'
          value: string(maxCatchupDays)
        }
        {
          name: 'DETECTOR_DIGEST_THRESHOLD'
          value: string(digestThreshold)
        }
        {
          name: 'DETECTOR_HTTP_TIMEOUT_SECONDS'
          value: '10'
        }
        {
          name: 'DETECTOR_HTTP_MAX_SECONDS'
          value: '60'
        }
        {
          name: 'DETECTOR_QUERY_TIMEOUT_SECONDS'
          value: '300'
        }
        {
          name: 'DETECTOR_SEND_UPDATES'
          value: 'true'
        }
        {
          name: 'DETECTOR_STATE_RETENTION_DAYS'
          value: '30'
        }
      ]
    }
  }
}

// No FTP and no basic-auth publishing: deployment uses the managed identity and the blob container.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

// Least privilege: each role on the one resource that needs it.
resource tableData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, app.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource blobData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, app.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, app.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsAdmin 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(secretsAdminObjectId)) {
  name: guid(vault.id, secretsAdminObjectId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: secretsAdminObjectId
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, app.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Log Analytics Reader on the Sentinel workspace, wherever it lives.
module sentinelAccess 'modules/sentinel-reader.bicep' = {
  name: 'sentinel-reader-${suffix}'
  scope: resourceGroup(sentinelParts[2], sentinelParts[4])
  params: {
    workspaceName: last(sentinelParts)
    principalId: app.identity.principalId
  }
}

output functionAppName string = app.name
output principalId string = app.identity.principalId
output tableEndpoint string = storage.properties.primaryEndpoints.table
